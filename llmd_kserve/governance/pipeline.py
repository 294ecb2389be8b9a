"""The one governance pipeline the director calls: authenticate → check limits → admit (keys' models, guardrails,
rate limits and token reservations, flow control, audit) → finish (settle tokens, audit ``done``)."""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

import msgspec

from llmd_kserve.defaults import MAX_PROMPT_CHARS
from llmd_kserve.errors import InvalidRequestError, Unauthorized
from llmd_kserve.governance.gateway import Admission, Gateway
from llmd_kserve.governance.keys import VirtualKey, legacy_key
from llmd_kserve.governance.limits import TokenEstimate, estimate_tokens

if TYPE_CHECKING:
    from llmd_kserve.control.requests import ParsedRequest

audit_log = logging.getLogger("llmd_kserve.audit")
"""Dedicated logger for the audit lines (``--audit`` without ``--audit-log``); only llmd_kserve.cli configures it."""
AuditMode = Literal["off", "hash", "full"]
_json_encode = msgspec.json.Encoder().encode


class AuthHook(Protocol):
    """Checks a request's headers; returns the caller's principal or raises ``Unauthorized`` (401)."""

    def check(self, headers: Mapping[str, str]) -> str | None: ...


class BearerTokenAuth:
    """``Authorization: Bearer <token>`` against a fixed set of tokens; the principal is a short token hash."""

    def __init__(self, tokens: Collection[str]) -> None:
        self._tokens = frozenset(t for t in tokens if t)

    def check(self, headers: Mapping[str, str]) -> str | None:
        value = headers.get("Authorization", "")
        scheme, _, token = value.partition(" ")
        if scheme.lower() != "bearer" or token.strip() not in self._tokens:
            raise Unauthorized("Invalid or missing API key (Authorization: Bearer <key>).")
        return hashlib.sha256(token.strip().encode()).hexdigest()[:12]


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-request maximums; None: no limit."""

    max_prompt_chars: int | None = MAX_PROMPT_CHARS
    """Characters of every string the engine renders (``Prompt.chars``)."""
    max_prompt_tokens: int | None = 131_072
    """Prompt tokens over all prompts of a request (token ids as sent, or text as the router tokenizes it)."""
    max_batch_size: int | None = 256
    """Prompts in one completions request."""


def _too_large(message: str, param: str) -> InvalidRequestError:
    return InvalidRequestError(message, param, status=413, type_="RequestTooLargeError")


def metered(key: VirtualKey | None) -> bool:
    """Whether the key's tokens are limited (tokens per minute or a budget): then its prompt is counted exactly."""
    return key is not None and (key.tpm is not None or key.token_budget is not None)


def estimate(req: ParsedRequest, prompt_tokens: int | None) -> TokenEstimate:
    """The most a request may use: its prompt tokens (counted, else estimated) plus ``n × max_tokens``."""
    return estimate_tokens(req.prompt, req.body, prompt_tokens)


@dataclass(slots=True)
class Governance:
    """Auth, limits, the audit line or trail, and the gateway's keys, guardrails, rate limits and flow control.

    ``audit_salt`` keys the audit line's prompt hash (HMAC-SHA256), so a short prompt cannot be confirmed from the
    log by hashing guesses; by default it is random per process.
    """

    auth: AuthHook | None = None
    limits: Limits = Limits()
    audit_mode: AuditMode = "off"
    audit_salt: bytes = field(default_factory=lambda: secrets.token_bytes(16))
    gateway: Gateway = field(default_factory=Gateway)
    operator_tokens: tuple[str, ...] = ()
    """Plain bearer tokens (``--api-keys-file``): operator keys."""

    # --- who is asking --------------------------------------------------------------------------------------------
    def authenticate(self, headers: Mapping[str, str]) -> tuple[VirtualKey | None, str | None]:
        """(virtual key or None, principal); 401 when keys are configured and the request has no valid one."""
        if self.auth is None:
            return None, None
        key = self.gateway.authenticate(headers)
        return key, key.id if key is not None else self.auth.check(headers)

    def is_operator(self, key: VirtualKey | None) -> bool:
        """A virtual key with ``admin: true``, or a plain operator token (``None``: a token list checked it)."""
        return key is None or key.admin or any(key.id == legacy_key(t).id for t in self.operator_tokens if t)

    # --- limits ---------------------------------------------------------------------------------------------------
    def check_policy(self, req: ParsedRequest) -> None:
        """Limits that need no tokenizer: characters, batch size, token ids sent as ids (413)."""
        lim, prompt = self.limits, req.prompt
        if lim.max_batch_size is not None and prompt.num_prompts > lim.max_batch_size:
            raise _too_large(f"Request has {prompt.num_prompts} prompts; this gateway allows at most "
                             f"{lim.max_batch_size} per request.", "prompt")
        if lim.max_prompt_chars is not None and prompt.chars > lim.max_prompt_chars:
            raise _too_large(f"Request text has {prompt.chars} characters (prompt, messages and every other string "
                             f"the model reads); this gateway allows at most {lim.max_prompt_chars}.", prompt.field)
        self.check_prompt_tokens(req, prompt.num_ids)

    def needs_token_count(self, req: ParsedRequest, key: VirtualKey | None) -> bool:
        """Whether the prompt must be tokenized and counted: the key's tokens are metered, or a text prompt could
        exceed ``max_prompt_tokens`` (at most 4 tokens per character, plus a few template tokens per message)."""
        if req.prompt.ids:
            return False
        if key is not None and metered(key) and self.gateway.active:  # no key (the usual case): no metering
            return True
        lim = self.limits.max_prompt_tokens
        return lim is not None and 4 * req.prompt.chars + 16 * req.prompt.num_messages + 1 > lim

    def check_prompt_tokens(self, req: ParsedRequest, tokens: int) -> None:
        lim = self.limits.max_prompt_tokens
        if lim is not None and tokens > lim:
            raise _too_large(f"Prompt has {tokens} tokens; this gateway allows at most {lim}.", req.prompt.field)

    # --- admission and its end ------------------------------------------------------------------------------------
    async def admit(self, key: VirtualKey | None, request_id: str, req: ParsedRequest, client: str | None, *,
                    client_request_id: str | None, prompt_tokens: int | None, offload: bool,
                    turn: bool = False) -> Admission | None:
        """The gateway's checks (403, 429 with ``Retry-After``, 503); None when no gateway part is configured."""
        if not self.gateway.active:
            return None
        return await self.gateway.admit(key, request_id, req.body, req.kind, req.model, client, offload=offload,
                                        client_request_id=client_request_id, tokens=estimate(req, prompt_tokens),
                                        prompt=req.prompt, turn=turn)

    def tap(self, adm: Admission | None) -> Callable[[bytes], None] | None:
        return self.gateway.tap(adm) if adm is not None else None

    def observe(self, adm: Admission | None, usage: tuple[int, int] | None, relayed_tokens: int,
                reached_engine: bool) -> None:
        if adm is not None:
            self.gateway.observe(adm, usage, relayed_tokens, reached_engine)

    def release(self, adm: Admission | None) -> None:
        if adm is not None:
            self.gateway.release(adm)

    async def finish(self, adm: Admission, status: int, endpoint: str | None) -> None:
        await self.gateway.finish(adm, status, endpoint)

    def audit(self, request_id: str, req: ParsedRequest, endpoint: str, principal: str | None,
                   client: str | None) -> None:
        """One structured log line per routed request (``--audit`` without an audit trail file)."""
        if self.audit_mode == "off" or not audit_log.isEnabledFor(logging.INFO):
            return
        prompt = req.prompt.sent
        record: dict[str, Any] = {
            "request_id": request_id, "kind": req.kind, "model": req.model, "endpoint": endpoint,
            "principal": principal, "client": client, "stream": req.stream, "max_tokens": req.max_tokens,
            "prompt_chars": req.prompt.chars,
            "prompt_hmac_sha256": hmac.new(self.audit_salt, _json_encode(prompt), hashlib.sha256).hexdigest(),
        }
        if self.audit_mode == "full":
            record["prompt"] = prompt
        audit_log.info(_json_encode(record).decode())
