"""The gateway half of governance: authenticate → admit (model, guardrails, limits, flow control, audit) → observe
the answer → finish (meter tokens, audit). The director reaches it through ``governance.pipeline.Governance``, under
both front ends (the HTTP router and the EPP).

Each request is one :class:`Admission`, handed from ``admit`` through the proxy to ``finish``; nothing is looked up
by a client-chosen string. Its ``request_id`` is the router's own; the client's ``x-request-id`` is only a label
(``client_request_id``). Tokens are reserved at ``admit`` and settled at ``finish`` on every ending: the engine's
``usage`` when it sent one, else the prompt tokens plus the content tokens relayed (``usage_source``).

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
from llmd_kserve.governance.limits import RateLimiter, TokenEstimate
from llmd_kserve.governance.metrics import GatewayMetrics
from llmd_kserve.governance.request_text import Detokenize, prompt_text, request_text
from llmd_kserve.governance.shared_state import SharedLimiter
from llmd_kserve.governance.trail import AuditTrail
from llmd_kserve.prompt import Kind, Prompt

AuditContent = Literal["hash", "full"]
MAX_CAPTURE = 256 * 1024
"""Bytes of an answer kept for the on-response guardrails and ``full`` audit (its hash covers all of it)."""
ANONYMOUS = VirtualKey(id="anonymous")
AUDIT_TEXT_CHARS = 64 * 1024
"""Characters of a prompt or answer an audit record keeps in ``full`` mode (the HMAC covers the whole)."""
OFFLOAD_ANSWER_BYTES = 64 * 1024
"""Captured answers larger than this are checked and redacted in a worker thread."""


UsageSource = Literal["engine", "estimate", "none"]


@dataclass(slots=True)
class Admission:
    """One admitted request's governance state, from ``admit`` to ``finish`` (the proxy carries it)."""

    key: VirtualKey
    request_id: str
    """The router's own id for this request (audit records, decisions, metering)."""
    model: str | None
    t0: float
    client_request_id: str | None = None
    """The client's ``x-request-id``: a label only, never used to find anything."""
    estimate: TokenEstimate = TokenEstimate(0, 0)
    reserved: int = 0
    slot: Waiting | None = None
    engine_usage: tuple[int, int] | None = None
    """(prompt, completion) tokens from the engine's ``usage``, when it sent one."""
    relayed_tokens: int = 0
    reached_engine: bool = False
    prompt_tokens: int = 0
    completion_tokens: int = 0
    usage_source: UsageSource = "none"
    settled: bool = False
    hasher: Any = None
    capture: bool = False
    """Keep the answer's first bytes (only when the on-response guardrails or a ``full`` audit read them)."""
    captured: bytearray = field(default_factory=bytearray)

    def chunk(self, data: bytes) -> None:
        """The proxy's tap: every body byte of the answer, as relayed."""
        if self.hasher is not None:
            self.hasher.update(data)
        if self.capture and len(self.captured) < MAX_CAPTURE:
            self.captured += data[: MAX_CAPTURE - len(self.captured)]

    def billed(self) -> tuple[int, int, UsageSource]:
        """(prompt, completion, source) to charge: the engine's usage, else the estimate of what the engine did
        (prompt tokens + content tokens relayed) when the request reached one, else nothing."""
        if self.engine_usage is not None:
            return *self.engine_usage, "engine"
        if self.reached_engine:
            return self.estimate.prompt, self.relayed_tokens, "estimate"
        return 0, 0, "none"


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
                 detokenize: Detokenize | None = None, shared: SharedLimiter | None = None) -> None:
        self.keys = keys
        self.limiter = limiter or RateLimiter()
        self.shared = shared
        """Rate limits and budgets in Redis (``--state-url``), shared with other replicas; None: ``limiter``."""
        self.flow = flow
        self.guardrails = guardrails or Guardrails()
        self.trail = trail
        self.audit_content = audit_content
        self.salt = salt if salt is not None else secrets.token_bytes(16)
        self.metrics = metrics
        self.clock = clock
        self.detokenize = detokenize
        """Turns token-id prompts into text for the guardrails and the audit (None: they stay unread)."""

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

    def _prompt_fields(self, body: dict[str, Any], kind: Kind, prompt: Prompt | None) -> dict[str, Any]:
        """The text work of ``admit``: the request's text through the guardrails (raises ``Blocked``), then the
        admit record's prompt fields (HMAC; in ``full`` mode the redacted text, cut at ``AUDIT_TEXT_CHARS``)."""
        req = (prompt_text(prompt, self.detokenize) if prompt is not None
               else request_text(body, kind, self.detokenize))
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

    async def admit(self, key: VirtualKey | None, request_id: str, body: dict[str, Any], kind: Kind,
                    model: str | None, client: str | None, *, offload: bool = False,
                    client_request_id: str | None = None, tokens: TokenEstimate | None = None,
                    prompt: Prompt | None = None, turn: bool = False) -> Admission:
        """Checks before scheduling; raises an HTTPError (403, 400, 429, 503) after auditing the refusal.

        ``request_id`` is the router's own id; ``tokens`` is what the request may use at most (reserved from the
        key's budget and tokens per minute until ``finish`` settles it). ``offload``: do the text work (guardrails,
        HMAC, redaction) in a worker thread (a big body). ``prompt``: the body's prompt when read already. ``turn``: it
        continues a live session (queued before new sessions' first turns)."""
        key = key or ANONYMOUS
        adm = Admission(key, request_id, model, self.clock(), client_request_id, tokens or TokenEstimate(0, 0))
        base = {"event": "admit", "request_id": request_id, "client_request_id": client_request_id,
                **self._who(key), "model": model, "client": client}
        fields: dict[str, Any] = {}
        try:
            if not key.allows(model):
                raise Forbidden(f"This API key may not use model `{model}`.", "model")
            if self.guardrails or self.trail is not None:
                fields = (await asyncio.to_thread(self._prompt_fields, body, kind, prompt) if offload
                          else self._prompt_fields(body, kind, prompt))
            adm.reserved = (self.limiter.admit(key, adm.estimate.total) if self.shared is None
                            else await self.shared.admit(key, adm.estimate.total))
            if self.flow is not None:
                t = self.clock()
                adm.slot = await self.flow.acquire(key.tenant, key.priority, key.max_concurrency, key.id, turn)
                self._gauges()
                if self.metrics is not None:
                    self.metrics.queue_wait.labels(str(key.priority)).observe(self.clock() - t)
        except HTTPError as exc:
            self._unreserve(adm)
            reason = getattr(exc, "reason", None) or exc.type
            self._count(key, reason)
            await self._audit({**base, "event": "deny", "status": exc.status, "reason": reason})
            raise
        except BaseException:  # cancelled while queued (the client went away)
            self._unreserve(adm)
            raise
        if self.trail is not None:
            adm.hasher = hmac.new(self.salt, digestmod=hashlib.sha256)
            try:
                await self._audit({**base, **fields})
            except OSError:
                self.release(adm)
                self._unreserve(adm)
                raise HTTPError("The audit log cannot be written; request refused.", None, 503,
                                "ServiceUnavailableError") from None
            except BaseException:
                self.release(adm)
                self._unreserve(adm)
                raise
        adm.capture = bool(self.guardrails) or (self.trail is not None and self.audit_content == "full")
        return adm

    def _unreserve(self, adm: Admission) -> None:
        """A refused or abandoned admission gives its reservation back (nothing was used)."""
        if not adm.settled:
            adm.settled = True
            if self.shared is None:
                self.limiter.settle(adm.key, adm.reserved, 0)
            else:
                self.shared.settle_soon(adm.key, adm.reserved, 0)

    def observe(self, adm: Admission, usage: tuple[int, int] | None, relayed_tokens: int = 0,
                reached_engine: bool = True) -> None:
        """The proxy's report when an answer ends: the engine's (prompt, completion) ``usage`` when it sent one,
        the content tokens relayed to the client, and whether the request reached an engine at all."""
        adm.engine_usage = usage
        adm.relayed_tokens = max(0, relayed_tokens)
        adm.reached_engine = reached_engine

    def tap(self, adm: Admission) -> Callable[[bytes], None] | None:
        """Where the proxy hands the answer's bytes (None: nobody reads them)."""
        return adm.chunk if adm.hasher is not None or adm.capture else None

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
        """After the answer (any ending: done, error, client gone): free the slot, settle the tokens reserved at
        ``admit`` with the tokens used, audit ``done`` (on-response guardrails flag it). Once per admission."""
        self.release(adm)
        if adm.settled:
            return
        adm.settled = True
        key = adm.key
        adm.prompt_tokens, adm.completion_tokens, adm.usage_source = adm.billed()
        used = adm.prompt_tokens + adm.completion_tokens
        if self.shared is None:
            self.limiter.settle(key, adm.reserved, used)
        else:
            await self.shared.settle(key, adm.reserved, used)
        ok = status < 400
        self._count(key, "ok" if ok else "error")
        if self.metrics is not None and used:
            t = self.metrics.tenant(key.tenant)
            self.metrics.tokens.labels(t, "prompt").inc(adm.prompt_tokens)
            self.metrics.tokens.labels(t, "completion").inc(adm.completion_tokens)
        if self.trail is None:
            return
        rec: dict[str, Any] = {"event": "done", "request_id": adm.request_id,
                               "client_request_id": adm.client_request_id, **self._who(key), "model": adm.model,
                               "endpoint": endpoint, "status": status, "outcome": "ok" if ok else "error",
                               "prompt_tokens": adm.prompt_tokens, "completion_tokens": adm.completion_tokens,
                               "usage_source": adm.usage_source, "latency_s": round(self.clock() - adm.t0, 6)}
        captured = bytes(adm.captured)
        if len(captured) > OFFLOAD_ANSWER_BYTES:
            rec.update(await asyncio.to_thread(self._answer_fields, captured))
        else:
            rec.update(self._answer_fields(captured))
        if adm.hasher is not None:
            rec["completion_hmac_sha256"] = adm.hasher.hexdigest()  # of the answer's bytes as relayed
        with contextlib.suppress(OSError):  # counted by the trail; the answer was already sent
            await self._audit(rec)

    async def close(self) -> None:
        """Close the audit trail and the shared state, when there are."""
        if self.trail is not None:
            await self.trail.close()
        if self.shared is not None:
            await self.shared.close()

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
