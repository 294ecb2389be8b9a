"""The governance pipeline a transport calls: authenticate → admit (model, guardrails, limits, flow control,
audit) → observe the answer → finish (meter tokens, audit). Used by the router; the EPP uses the same parts.

Audit records per request: ``admit`` (durable before the request goes upstream, so every answer a client saw has
one) and ``done`` (outcome, status, endpoint, tokens, latency, completion hash); refusals get one ``deny``.
Prompts and completions are HMAC-SHA256-hashed with the salt (``hash``) or, with ``full``, logged as text after
the guardrails' redaction.
"""

from __future__ import annotations

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
from llmd_kserve.governance.guardrails import Guardrails, prompt_text
from llmd_kserve.governance.keys import LEGACY_TENANT, Forbidden, KeyStore, VirtualKey
from llmd_kserve.governance.limits import RateLimiter
from llmd_kserve.governance.metrics import GatewayMetrics
from llmd_kserve.governance.trail import AuditTrail

AuditContent = Literal["hash", "full"]
MAX_CAPTURE = 256 * 1024
"""Bytes of an answer kept for the on-response guardrails and ``full`` audit (its hash covers all of it)."""
ANONYMOUS = VirtualKey(id="anonymous")


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
                 metrics: GatewayMetrics | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.keys = keys
        self.limiter = limiter or RateLimiter()
        self.flow = flow
        self.guardrails = guardrails or Guardrails()
        self.trail = trail
        self.audit_content = audit_content
        self.salt = salt if salt is not None else secrets.token_bytes(16)
        self.metrics = metrics
        self.clock = clock
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

    async def admit(self, key: VirtualKey | None, request_id: str, body: dict[str, Any], kind: str,
                    model: str | None, client: str | None) -> Admission:
        """Checks before scheduling; raises an HTTPError (403, 400, 429, 503) after auditing the refusal."""
        key = key or ANONYMOUS
        adm = Admission(key, request_id, model, self.clock())
        text = prompt_text(body, kind) if self.guardrails or self.trail is not None else ""
        base = {"event": "admit", "request_id": request_id, **self._who(key), "model": model, "client": client}
        try:
            if not key.allows(model):
                raise Forbidden(f"This API key may not use model `{model}`.", "model")
            if self.guardrails:
                self.guardrails.pre_request(text)
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
            adm.hasher = hmac.new(self.salt, digestmod=hashlib.sha256) if self.audit_content == "hash" else None
            prompt = ({"prompt": self.guardrails.redact(text)} if self.audit_content == "full"
                      else {"prompt_hmac_sha256": self._hmac(text.encode())})
            try:
                await self._audit({**base, **prompt, "prompt_chars": len(text)})
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
        text = answer_text(bytes(adm.captured)) if adm.captured and (self.guardrails or self.audit_content == "full") else ""
        if self.guardrails and text:
            v = self.guardrails.on_response(text)
            if not v.allow:
                rec["flagged"] = v.reason
        if self.audit_content == "full":
            rec["completion"] = self.guardrails.redact(text)
        elif adm.hasher is not None:
            rec["completion_hmac_sha256"] = adm.hasher.hexdigest()  # of the answer's bytes as relayed
        with contextlib.suppress(OSError):  # counted by the trail; the answer was already sent
            await self._audit(rec)

    async def audit_admin(self, fields: dict[str, Any]) -> None:
        """Record an operator action (``event: admin``, e.g. a config change with who made it and the hashes before
        and after) in the audit trail, when there is one; raises OSError when it cannot be written."""
        await self._audit({"event": "admin", **fields})


def tenant_of(key: VirtualKey | None) -> str:
    return key.tenant if key is not None else LEGACY_TENANT
