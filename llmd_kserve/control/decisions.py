"""Ring buffer of recent scheduling decisions with every plugin's score, served at ``GET /debug/decisions``."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from llmd_kserve.scheduling.scheduler import SchedulingResult


class Decision:
    """One ``schedule`` call (one attempt of a request) and how it ended; filled in as the request proceeds."""

    __slots__ = ("request_id", "client_request_id", "attempt", "at", "result", "scheduling_ms", "status", "outcome",
                 "ttfb_ms", "cached_tokens", "prompt_tokens")

    def __init__(self, request_id: str, attempt: int, at: float, result: SchedulingResult,
                 scheduling_ms: float, client_request_id: str | None = None) -> None:
        self.request_id = request_id
        """The router's own id of the request."""
        self.client_request_id = client_request_id
        """The client's ``x-request-id`` (a label; several requests may share one)."""
        self.attempt = attempt
        self.at = at
        self.result = result
        self.scheduling_ms = scheduling_ms
        self.status: int | None = None
        self.outcome = "pending"
        self.ttfb_ms: float | None = None
        self.cached_tokens: int | None = None
        self.prompt_tokens: int | None = None

    def to_dict(self) -> dict[str, Any]:
        r = self.result
        return {
            "request_id": self.request_id, "client_request_id": self.client_request_id, "attempt": self.attempt,
            "time": self.at,
            "target": r.target, "prefill": r.prefill, "profile": r.profile,
            "prompt_tokens": r.prompt_tokens, "predicted_cached_tokens": r.predicted_cached_tokens,
            "reported_cached_tokens": self.cached_tokens, "reported_prompt_tokens": self.prompt_tokens,
            "scheduling_ms": round(self.scheduling_ms, 4), "ttfb_ms": self.ttfb_ms,
            "status": self.status, "outcome": self.outcome,
            "scores": {name: dict(per_ep) for name, per_ep in r.scores.items()},
            "totals": dict(r.totals),
            "config_hash": r.config_hash or None,
            "weights": dict(r.weights or {}),
            "pd": asdict(r.pd) if r.pd is not None else None,
        }


class DecisionLog:
    """The last ``size`` decisions, newest last; O(1) per request, serialized only when asked."""

    def __init__(self, size: int = 256, clock: Callable[[], float] = time.time) -> None:
        self._ring: deque[Decision] = deque(maxlen=max(1, size))
        self._clock = clock

    def add(self, request_id: str, attempt: int, result: SchedulingResult, scheduling_ms: float,
            client_request_id: str | None = None) -> Decision:
        d = Decision(request_id, attempt, self._clock(), result, scheduling_ms, client_request_id)
        self._ring.append(d)
        return d

    def recent(self, limit: int | None = None, request_id: str | None = None) -> list[dict[str, Any]]:
        """Newest last; ``request_id`` matches the router's id or the client's ``x-request-id``."""
        items = [d for d in self._ring
                 if request_id is None or request_id in (d.request_id, d.client_request_id)]
        if limit is not None:
            items = items[-limit:] if limit > 0 else []
        return [d.to_dict() for d in items]
