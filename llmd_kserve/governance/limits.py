"""Per-key request and token rate limits (token buckets) and token budgets, checked before scheduling.

Requests per minute: a bucket of ``rpm`` requests refilled at ``rpm/60`` per second; one per admitted request.
Tokens per minute: a bucket of ``tpm`` tokens, charged *after* the answer with the tokens the engine metered
(prompt + completion), so it can go into debt; a key in debt is refused until the bucket is positive again.
Budget: total tokens used so far against ``token_budget`` (in memory; the audit trail holds the durable record).
A refusal says when to retry (``retry_after`` seconds; None for an exhausted budget).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from llmd_kserve.errors import HTTPError
from llmd_kserve.governance.keys import VirtualKey

MAX_TRACKED_KEYS = 100_000


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


@dataclass(slots=True)
class RateLimiter:
    """Limits of every key it has seen; ``admit`` before scheduling, ``charge`` with the metered tokens after."""

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

    def admit(self, key: VirtualKey) -> None:
        """Take one request from the key's allowance, or raise ``RateLimited`` (nothing taken then)."""
        if key.rpm is None and key.tpm is None and key.token_budget is None:
            return
        u, now = self._of(key), self.clock()
        if key.token_budget is not None and u.used >= key.token_budget:
            raise RateLimited(f"Token budget of this key exhausted ({u.used} of {key.token_budget} tokens used).",
                              "budget", None, code_type="insufficient_quota")
        if key.tpm is not None:
            level = u.tokens.refill(now, key.tpm, key.tpm / 60)
            if level <= 0:
                raise RateLimited(f"Tokens-per-minute limit of {key.tpm} reached.", "tpm", (1 - level) * 60 / key.tpm)
        if key.rpm is not None:
            level = u.requests.refill(now, key.rpm, key.rpm / 60)
            if level < 1:
                raise RateLimited(f"Requests-per-minute limit of {key.rpm} reached.", "rpm", (1 - level) * 60 / key.rpm)
            u.requests.level -= 1

    def charge(self, key: VirtualKey, tokens: int) -> None:
        """Meter ``tokens`` (prompt + completion) used by an answer to ``key``."""
        if tokens <= 0 or (key.tpm is None and key.token_budget is None):
            return
        u = self._of(key)
        u.used += tokens
        if key.tpm is not None:
            u.tokens.refill(self.clock(), key.tpm, key.tpm / 60)
            u.tokens.level -= tokens

    def used(self, key_id: str) -> int:
        u = self._usage.get(key_id)
        return u.used if u is not None else 0
