"""Outlier ejection: an endpoint that times out or cannot be reached is taken out of routing for a while.

Envoy's consecutive-failure ejection, reduced: ``consecutive_failures`` failures in a row (connect errors,
first-byte and between-chunk timeouts, streams cut mid-way) eject the endpoint for ``base_ejection_s``, doubled on
each ejection that follows without a success in between (capped at ``max_ejection_s``). When the time is up the
endpoint is eligible again - and the scheduler's health filter still keeps it out until its ``/metrics`` answer
again (a stopped or dead engine stays out; one that is back gets traffic). One success resets it. While every
endpoint is ejected, none is (routing somewhere beats refusing everything).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass

from llmd_kserve.types import EndpointId

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class EjectionPolicy:
    consecutive_failures: int = 1
    base_ejection_s: float = 5.0
    max_ejection_s: float = 120.0


class OutlierEjector:
    """Failure counts and ejection deadlines per endpoint (injected clock)."""

    def __init__(self, policy: EjectionPolicy = EjectionPolicy(), clock: Callable[[], float] = time.monotonic,
                 on_eject: Callable[[EndpointId, str, float], None] | None = None) -> None:
        self.policy = policy
        self._clock = clock
        self._on_eject = on_eject
        self._failures: dict[EndpointId, int] = {}
        self._ejections: dict[EndpointId, int] = {}
        self._until: dict[EndpointId, float] = {}

    def failure(self, endpoint: EndpointId, reason: str) -> bool:
        """Record a failure; True when it ejects the endpoint now."""
        n = self._failures.get(endpoint, 0) + 1
        self._failures[endpoint] = n
        if n < self.policy.consecutive_failures or self.is_ejected(endpoint):
            return False
        k = self._ejections.get(endpoint, 0)
        self._ejections[endpoint] = k + 1
        duration = min(self.policy.max_ejection_s, self.policy.base_ejection_s * 2 ** k)
        self._until[endpoint] = self._clock() + duration
        self._failures[endpoint] = 0
        log.warning("ejecting endpoint %s for %.1f s after %s", endpoint, duration, reason)
        if self._on_eject is not None:
            self._on_eject(endpoint, reason, duration)
        return True

    def success(self, endpoint: EndpointId) -> None:
        self._failures.pop(endpoint, None)
        self._ejections.pop(endpoint, None)

    def is_ejected(self, endpoint: EndpointId) -> bool:
        until = self._until.get(endpoint)
        if until is None:
            return False
        if self._clock() >= until:
            del self._until[endpoint]
            return False
        return True

    def ejected(self, candidates: Collection[EndpointId]) -> set[EndpointId]:
        """The candidates currently ejected; empty when that would be all of them."""
        out = {e for e in candidates if e in self._until and self.is_ejected(e)}
        return set() if out and len(out) >= len(candidates) else out

    def ejected_now(self) -> list[EndpointId]:
        return [e for e in list(self._until) if self.is_ejected(e)]

    def forget(self, endpoint: EndpointId) -> None:
        """The endpoint left the pool."""
        for d in (self._failures, self._ejections, self._until):
            d.pop(endpoint, None)
