"""Per-key request and token rate limits (token buckets) and token budgets, checked before scheduling.

Requests per minute: a bucket of ``rpm`` requests refilled at ``rpm/60`` per second; one per admitted request.
Tokens: each request **reserves** the most it may use (:class:`TokenEstimate`: its prompt tokens plus
``n × max_tokens``) when it is admitted, and is **settled** after its answer with the tokens it really used (the
engine's ``usage``, or the router's estimate when there is none): the unused part goes back.
Tokens per minute: a bucket of ``tpm`` tokens; a request is admitted when the bucket holds its reservation (at most
a full bucket), so parallel requests see each other's reservations.
Budget: tokens used plus tokens reserved by requests in flight never pass ``token_budget``; a request whose
reservation does not fit is refused (in memory; the audit trail holds the durable record).
A refusal says when to retry (``retry_after`` seconds; None for a budget).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from llmd_kserve.errors import HTTPError
from llmd_kserve.governance.keys import VirtualKey
from llmd_kserve.prompt import Prompt

MAX_TRACKED_KEYS = 100_000
DEFAULT_MAX_TOKENS = {"completion": 16, "chat": 1024}
"""Completion tokens reserved per answer when a request has no ``max_tokens`` (completions: vLLM's own default;
chat: a stated allowance, since the engine may write to the end of the context; more is charged after the answer)."""
CHARS_PER_TOKEN = 4
"""Prompt estimate when the router did not count tokens: one token per 4 characters, rounded up."""


class RateLimited(HTTPError):
    """429: a rate limit, budget or queue refused the request; ``headers`` carry ``Retry-After`` and the reason."""

    status = 429
    type = "RateLimitError"

    def __init__(self, message: str, reason: str, retry_after: float | None = None, status: int | None = None,
                 code_type: str | None = None) -> None:
        super().__init__(message, None, status, code_type)
        self.reason = reason
        self.headers = {"x-llmd-drop-reason": reason}
        if retry_after is not None:
            self.headers["Retry-After"] = str(max(1, math.ceil(retry_after)))


@dataclass(frozen=True, slots=True)
class TokenEstimate:
    """The most a request may use: ``prompt`` tokens (counted, or estimated from characters) + ``completion``."""

    prompt: int
    completion: int
    prompt_counted: bool = True

    @property
    def total(self) -> int:
        return self.prompt + self.completion


def _int(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else None


def estimate_tokens(prompt: Prompt, body: Mapping[str, Any], prompt_tokens: int | None) -> TokenEstimate:
    """``prompt_tokens`` when counted (else the prompt's characters / 4) + prompts × ``n`` × the engine's
    ``max_tokens`` (chat: ``max_completion_tokens`` first, as vLLM reads it; absent: ``DEFAULT_MAX_TOKENS``)."""
    kind, num_prompts = prompt.kind, prompt.num_prompts
    mt = _int(body.get("max_completion_tokens")) if kind == "chat" else None
    mt = mt or _int(body.get("max_tokens")) or DEFAULT_MAX_TOKENS.get(kind, DEFAULT_MAX_TOKENS["chat"])
    completion = max(1, num_prompts) * (_int(body.get("n")) or 1) * mt
    if prompt_tokens is not None:
        return TokenEstimate(prompt_tokens, completion)
    return TokenEstimate(max(num_prompts, -(-prompt.chars // CHARS_PER_TOKEN)), completion, prompt_counted=False)


@dataclass(slots=True)
class _Bucket:
    level: float
    at: float

    def refill(self, now: float, capacity: float, per_s: float) -> float:
        self.level = min(capacity, self.level + (now - self.at) * per_s)
        self.at = now
        return self.level


@dataclass(slots=True)
class _KeyUsage:
    requests: _Bucket
    tokens: _Bucket
    used: int = 0
    reserved: int = 0


@dataclass(slots=True)
class RateLimiter:
    """Limits of every key it has seen; ``admit`` (reserves) before scheduling, ``settle`` with the used tokens after."""

    clock: Callable[[], float] = time.monotonic
    _usage: dict[str, _KeyUsage] = field(default_factory=dict)

    def _of(self, key: VirtualKey) -> _KeyUsage:
        u = self._usage.get(key.id)
        if u is None:
            now = self.clock()
            u = _KeyUsage(_Bucket(float(key.rpm or 0), now), _Bucket(float(key.tpm or 0), now))
            if len(self._usage) >= MAX_TRACKED_KEYS:
                self._usage.pop(next(iter(self._usage)))
            self._usage[key.id] = u
        return u

    def admit(self, key: VirtualKey, reserve: int = 0) -> int:
        """Take one request and reserve ``reserve`` tokens from the key's allowance, or raise ``RateLimited``
        (nothing taken then). Returns the tokens reserved, to pass to ``settle``."""
        if key.rpm is None and key.tpm is None and key.token_budget is None:
            return 0
        u, now, reserve = self._of(key), self.clock(), max(0, reserve)
        if key.token_budget is not None:
            if u.used >= key.token_budget:
                raise RateLimited(f"Token budget of this key exhausted ({u.used} of {key.token_budget} tokens used).",
                                  "budget", None, code_type="insufficient_quota")
            left = key.token_budget - u.used - u.reserved
            if reserve > left:
                raise RateLimited(
                    f"This request may use up to {reserve} tokens (prompt + n x max_tokens); the key's token budget "
                    f"has {max(0, left)} left ({u.used} used, {u.reserved} reserved by requests in flight). "
                    f"Lower max_tokens or wait for requests in flight.", "budget", None, code_type="insufficient_quota")
        if key.tpm is not None:
            level = u.tokens.refill(now, key.tpm, key.tpm / 60)
            need = max(min(float(reserve), float(key.tpm)), 1e-9)  # at most a full bucket; positive at least
            if level < need:
                raise RateLimited(f"Tokens-per-minute limit of {key.tpm} reached.", "tpm", (need - level) * 60 / key.tpm)
        if key.rpm is not None:
            level = u.requests.refill(now, key.rpm, key.rpm / 60)
            if level < 1:
                raise RateLimited(f"Requests-per-minute limit of {key.rpm} reached.", "rpm", (1 - level) * 60 / key.rpm)
            u.requests.level -= 1
        if key.tpm is None and key.token_budget is None:
            return 0
        u.reserved += reserve
        if key.tpm is not None:
            u.tokens.level -= reserve
        return reserve

    def settle(self, key: VirtualKey, reserved: int, used: int) -> None:
        """A request admitted with ``reserved`` tokens used ``used``: charge those, give the rest back."""
        if key.tpm is None and key.token_budget is None:  # no token limits (any more): only give back
            u0 = self._usage.get(key.id)
            if u0 is not None:
                u0.reserved = max(0, u0.reserved - reserved)
            return
        u = self._of(key)
        u.reserved = max(0, u.reserved - reserved)
        u.used += max(0, used)
        if key.tpm is not None:
            level = u.tokens.refill(self.clock(), key.tpm, key.tpm / 60)
            u.tokens.level = min(float(key.tpm), level + reserved - used)

    def charge(self, key: VirtualKey, tokens: int) -> None:
        """Meter ``tokens`` (prompt + completion) used by an answer to ``key`` that reserved nothing."""
        if tokens > 0:
            self.settle(key, 0, tokens)

    def used(self, key_id: str) -> int:
        u = self._usage.get(key_id)
        return u.used if u is not None else 0

    def reserved(self, key_id: str) -> int:
        u = self._usage.get(key_id)
        return u.reserved if u is not None else 0
