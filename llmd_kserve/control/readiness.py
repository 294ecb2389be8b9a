"""Readiness (``GET /ready``): whether a router replica should get traffic yet, separate from liveness (``/health``).

A replica is ready once

1. it has endpoints;
2. it has tried each endpoint's ``/metrics`` once (a success or a failure: one dead engine must not keep every
   replica out) and at least one endpoint has fresh metrics;
3. its KV index is warm for every fresh endpoint that streams KV events, when the scheduler routes on them
   (precise prefix). An endpoint's index is *warm* once the subscriber is connected to its publisher and one of:

   - a message arrived since the connection was made (events are flowing);
   - the engine has never looked a prompt up in its prefix cache (``vllm:prefix_cache_queries`` is 0): its cache
     is empty, so the empty index is exact;
   - ``grace_s`` passed since the connection was made. An idle engine publishes nothing, and what it cached before
     this replica subscribed is not sent again: the replica learns those blocks only as the engine stores or
     evicts blocks, so for a while it sees fewer prefix hits on that engine than a replica that was there before.

Warm-up is checked until the replica is first ready; after that, ``/ready`` fails only while it has no endpoint
with fresh metrics (as ``/health``): an engine restarting later must not take every replica out of the balancer
at once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from llmd_kserve.kvcache.subscriber import SubscriptionStats
from llmd_kserve.types import EndpointId, EndpointMetrics, EndpointState

KV_GRACE_S = 5.0
"""Default seconds a connected KV-event stream may stay silent before its (idle) engine counts as warm."""


@dataclass(frozen=True, slots=True)
class Readiness:
    """The verdict: ``reason`` is ``ready``, ``no_endpoints``, ``first_scrape``, ``no_healthy_endpoint`` or
    ``kv_warming``; ``waiting``: the endpoints it waits for."""

    ready: bool
    reason: str
    waiting: tuple[str, ...] = ()


def kv_warm(stats: SubscriptionStats | None, metrics: EndpointMetrics, now: float, grace_s: float) -> bool:
    """Whether an endpoint's part of the KV index is warm (see the module docstring)."""
    if stats is None or stats.connected_at is None:
        return False
    flowing = stats.last_message_at is not None and stats.last_message_at >= stats.connected_at
    return flowing or metrics.prefix_queries == 0 or now - stats.connected_at >= grace_s


class ReadinessGate:
    """Evaluates readiness on each call; remembers that the replica has been ready (warm-up is checked once)."""

    def __init__(self, grace_s: float = KV_GRACE_S) -> None:
        self.grace_s = grace_s
        self.was_ready = False

    def check(self, endpoints: Sequence[EndpointState], scraped: Callable[[EndpointId], bool],
              kv: Mapping[EndpointId, SubscriptionStats], kv_wanted: bool, now: float) -> Readiness:
        """``scraped(id)``: its ``/metrics`` was tried at least once; ``kv``: the subscriber's stats by endpoint;
        ``kv_wanted``: the scheduler routes on KV events; ``now``: ``time.monotonic()``."""
        if not endpoints:
            return Readiness(False, "no_endpoints")
        if not self.was_ready:
            unscraped = tuple(s.id for s in endpoints if not scraped(s.id))
            if unscraped:
                return Readiness(False, "first_scrape", unscraped)
        fresh = [s for s in endpoints if not s.metrics.stale]
        if not fresh:
            return Readiness(False, "no_healthy_endpoint", tuple(s.id for s in endpoints))
        if not self.was_ready and kv_wanted:
            cold = tuple(s.id for s in fresh if s.endpoint.kv_events is not None
                         and not kv_warm(kv.get(s.id), s.metrics, now, self.grace_s))
            if cold:
                return Readiness(False, "kv_warming", cold)
        self.was_ready = True
        return Readiness(True, "ready")
