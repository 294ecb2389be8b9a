"""The governance pipeline a transport calls: authenticate → admit (model, guardrails, limits, flow control,
audit) → observe the answer → finish (meter tokens, audit). Used by the router; the EPP uses the same parts.

Audit records per request: ``admit`` (durable before the request goes upstream, so every answer a client saw has
one) and ``done`` (outcome, status, endpoint, tokens, latency, completion hash); refusals get one ``deny``.
Prompts and completions are HMAC-SHA256-hashed with the salt; with ``full`` their text is logged too, after the
guardrails' redaction, cut at ``AUDIT_TEXT_CHARS`` (``prompt_truncated``/``completion_truncated`` say so).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from llmd_kserve.errors import HTTPError
from llmd_kserve.governance.flow import FlowController, Waiting
from llmd_kserve.governance.guardrails import Guardrails
from llmd_kserve.governance.keys import LEGACY_TENANT, Forbidden, KeyStore, VirtualKey
from llmd_kserve.governance.limits import RateLimiter
from llmd_kserve.governance.metrics import GatewayMetrics
from llmd_kserve.governance.request_text import Detokenize, request_text
from llmd_kserve.governance.trail import AuditTrail

AuditContent = Literal["hash", "full"]
MAX_CAPTURE = 256 * 1024
"""Bytes of an answer kept for the on-response guardrails and ``full`` audit (its hash covers all of it)."""
ANONYMOUS = VirtualKey(id="anonymous")
AUDIT_TEXT_CHARS = 64 * 1024
"""Characters of a prompt or answer an audit record keeps in ``full`` mode (the HMAC covers the whole)."""
OFFLOAD_ANSWER_BYTES = 64 * 1024
"""Captured answers larger than this are checked and redacted in a worker thread."""


@dataclass(slots=True)
class Admission:
    """One admitted request's governance state, from ``admit`` to ``finish``."""

    key: VirtualKey
    request_id: str
    model: str | None
    t0: float
    slot: Waiting | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    hasher: Any = None
    captured: bytearray = field(default_factory=bytearray)

    def chunk(self, data: bytes) -> None:
        """The proxy's tap: every body byte of the answer, as relayed."""
        if self.hasher is not None:
            self.hasher.update(data)
        if len(self.captured) < MAX_CAPTURE:
            self.captured += data[: MAX_CAPTURE - len(self.captured)]


def answer_text(raw: bytes) -> str:
    """The generated text of a JSON answer or of SSE events (choices' ``text``/``message.content``/``delta.content``)."""
    out: list[str] = []
    docs = [raw] if raw.lstrip().startswith(b"{") else [
        ln[5:].strip() for ln in raw.split(b"\n") if ln.startswith(b"data:") and not ln.endswith(b"[DONE]")]
    for d in docs:
        try:
            obj = json.loads(d)
        except ValueError:
            continue
        for c in obj.get("choices") or () if isinstance(obj, dict) else ():
            if isinstance(c, dict):
                for part in (c.get("text"), (c.get("message") or {}).get("content"), (c.get("delta") or {}).get("content")):
                    if isinstance(part, str):
                        out.append(part)
    return "".join(out)


class Gateway:
    def __init__(self, keys: KeyStore | None = None, limiter: RateLimiter | None = None,
                 flow: FlowController | None = None, guardrails: Guardrails | None = None,
                 trail: AuditTrail | None = None, audit_content: AuditContent = "hash", salt: bytes | None = None,
                 metrics: GatewayMetrics | None = None, clock: Callable[[], float] = time.monotonic,
                 detokenize: Detokenize | None = None) -> None:
        self.keys = keys
        self.limiter = limiter or RateLimiter()
        self.flow = flow
        self.guardrails = guardrails or Guardrails()
        self.trail = trail
        self.audit_content = audit_content
        self.salt = salt if salt is not None else secrets.token_bytes(16)
        self.metrics = metrics
        self.clock = clock
        self.detokenize = detokenize
        """Turns token-id prompts into text for the guardrails and the audit (None: they stay unread)."""
        self.pending: dict[str, Admission] = {}

    @property
    def active(self) -> bool:
        """Whether requests go through ``admit``/``finish`` at all."""
        return bool(self.keys is not None and self.keys.enabled or self.flow or self.guardrails or self.trail)

    def authenticate(self, headers: Mapping[str, str]) -> VirtualKey | None:
        return self.keys.authenticate(headers) if self.keys is not None and self.keys.enabled else None

    def _hmac(self, data: bytes) -> str:
        return hmac.new(self.salt, data, hashlib.sha256).hexdigest()

    def _count(self, key: VirtualKey, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.requests.labels(self.metrics.tenant(key.tenant), outcome).inc()

    async def _audit(self, fields: dict[str, Any]) -> None:
        """Append a record once it is in the file; OSError when it could not be written (the trail counts it, and
        the next record written says how many were lost), except for a ``deny``: that request keeps its refusal."""
        if self.trail is not None:
            try:
                await self.trail.record(fields)
            except OSError:
                if fields.get("event") != "deny":
                    raise

    def _who(self, key: VirtualKey) -> dict[str, Any]:
        return {"key": key.id, "tenant": key.tenant, "team": key.team}

    def _prompt_fields(self, body: dict[str, Any], kind: str) -> dict[str, Any]:
        """The text work of ``admit``: the request's text through the guardrails (raises ``Blocked``), then the
        admit record's prompt fields (HMAC; in ``full`` mode the redacted text, cut at ``AUDIT_TEXT_CHARS``)."""
        req = request_text(body, kind, self.detokenize)
        if self.guardrails:
            self.guardrails.pre_request(req)
        if self.trail is None:
            return {}
        fields: dict[str, Any] = {"prompt_chars": len(req.text),
                                  "prompt_hmac_sha256": self._hmac(req.digest_input())}
        if req.token_ids:
            fields.update(prompt_token_ids=req.token_ids, detokenized=req.readable)
        if self.audit_content == "full":
            fields.update(_kept_text("prompt", self.guardrails.redact(req.text)))
        return fields

    async def admit(self, key: VirtualKey | None, request_id: str, body: dict[str, Any], kind: str,
                    model: str | None, client: str | None, *, offload: bool = False) -> Admission:
        """Checks before scheduling; raises an HTTPError (403, 400, 429, 503) after auditing the refusal.
        ``offload``: do the text work (guardrails, HMAC, redaction) in a worker thread (a big body)."""
        key = key or ANONYMOUS
        adm = Admission(key, request_id, model, self.clock())
        base = {"event": "admit", "request_id": request_id, **self._who(key), "model": model, "client": client}
        prompt: dict[str, Any] = {}
        try:
            if not key.allows(model):
                raise Forbidden(f"This API key may not use model `{model}`.", "model")
            if self.guardrails or self.trail is not None:
                prompt = (await asyncio.to_thread(self._prompt_fields, body, kind) if offload
                          else self._prompt_fields(body, kind))
            self.limiter.admit(key)
            if self.flow is not None:
                t = self.clock()
                adm.slot = await self.flow.acquire(key.tenant, key.priority, key.max_concurrency, key.id)
                self._gauges()
                if self.metrics is not None:
                    self.metrics.queue_wait.labels(str(key.priority)).observe(self.clock() - t)
        except HTTPError as exc:
            reason = getattr(exc, "reason", None) or exc.type
            self._count(key, reason)
            await self._audit({**base, "event": "deny", "status": exc.status, "reason": reason})
            raise
        if self.trail is not None:
            adm.hasher = hmac.new(self.salt, digestmod=hashlib.sha256)
            try:
                await self._audit({**base, **prompt})
            except OSError:
                self.release(adm)
                raise HTTPError("The audit log cannot be written; request refused.", None, 503,
                                "ServiceUnavailableError") from None
        self.pending[request_id] = adm
        return adm

    def observe(self, request_id: str, prompt_tokens: int, completion_tokens: int) -> None:
        """The proxy's usage hook: tokens the engine metered for this request."""
        adm = self.pending.get(request_id)
        if adm is not None:
            adm.prompt_tokens, adm.completion_tokens = prompt_tokens, completion_tokens

    def tap(self, request_id: str) -> Callable[[bytes], None] | None:
        adm = self.pending.get(request_id)
        return adm.chunk if adm is not None and (self.trail is not None or self.guardrails) else None

    def release(self, adm: Admission) -> None:
        if adm.slot is not None and self.flow is not None:
            self.flow.release(adm.slot)
            adm.slot = None
            self._gauges()

    def _gauges(self) -> None:
        if self.metrics is None or self.flow is None:
            return
        q = self.flow.queue
        self.metrics.in_flight.set(q.in_flight)
        for band, n in q.queued.items():
            self.metrics.queue_depth.labels(str(band)).set(n)

    async def finish(self, adm: Admission, status: int, endpoint: str | None) -> None:
        """After the answer: free the slot, meter tokens, audit ``done`` (on-response guardrails flag it)."""
        self.release(adm)
        self.pending.pop(adm.request_id, None)
        key, used = adm.key, adm.prompt_tokens + adm.completion_tokens
        self.limiter.charge(key, used)
        ok = status < 400
        self._count(key, "ok" if ok else "error")
        if self.metrics is not None and used:
            t = self.metrics.tenant(key.tenant)
            self.metrics.tokens.labels(t, "prompt").inc(adm.prompt_tokens)
            self.metrics.tokens.labels(t, "completion").inc(adm.completion_tokens)
        if self.trail is None:
            return
        rec: dict[str, Any] = {"event": "done", "request_id": adm.request_id, **self._who(key), "model": adm.model,
                               "endpoint": endpoint, "status": status, "outcome": "ok" if ok else "error",
                               "prompt_tokens": adm.prompt_tokens, "completion_tokens": adm.completion_tokens,
                               "latency_s": round(self.clock() - adm.t0, 6)}
        captured = bytes(adm.captured)
        if len(captured) > OFFLOAD_ANSWER_BYTES:
            rec.update(await asyncio.to_thread(self._answer_fields, captured))
        else:
            rec.update(self._answer_fields(captured))
        if adm.hasher is not None:
            rec["completion_hmac_sha256"] = adm.hasher.hexdigest()  # of the answer's bytes as relayed
        with contextlib.suppress(OSError):  # counted by the trail; the answer was already sent
            await self._audit(rec)

    async def audit_admin(self, fields: dict[str, Any]) -> None:
        """Record an operator action (``event: admin``, e.g. a config change with who made it and the hashes before
        and after) in the audit trail, when there is one; raises OSError when it cannot be written."""
        await self._audit({"event": "admin", **fields})

    def _answer_fields(self, captured: bytes) -> dict[str, Any]:
        """The text work of ``finish``: on-response guardrails (``flagged``), and in ``full`` mode the answer's text
        redacted and cut at ``AUDIT_TEXT_CHARS`` (also cut when more than ``MAX_CAPTURE`` bytes were relayed)."""
        fields: dict[str, Any] = {}
        text = answer_text(captured) if captured and (self.guardrails or self.audit_content == "full") else ""
        if self.guardrails and text:
            v = self.guardrails.on_response(text)
            if not v.allow:
                fields["flagged"] = v.reason
        if self.audit_content == "full":
            fields.update(_kept_text("completion", self.guardrails.redact(text)))
            if len(captured) >= MAX_CAPTURE:
                fields["completion_truncated"] = True
        return fields


def _kept_text(name: str, text: str) -> dict[str, Any]:
    """``{name: text}``, cut at ``AUDIT_TEXT_CHARS`` with ``{name}_truncated: true`` when it was longer."""
    if len(text) <= AUDIT_TEXT_CHARS:
        return {name: text}
    return {name: text[:AUDIT_TEXT_CHARS], f"{name}_truncated": True}


def tenant_of(key: VirtualKey | None) -> str:
    return key.tenant if key is not None else LEGACY_TENANT
