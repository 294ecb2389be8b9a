"""Flow control at the simulated router: requests wait in their priority band while every ready endpoint is
saturated (llm-d's saturation detector), and go on when one has room; its queue is ``llmd_router_queue_depth{band}``.

An endpoint is saturated when its scraped ``waiting`` reaches ``queue_depth_threshold`` or its KV usage reaches
``kv_threshold`` (llm-d's ``queueDepthThreshold`` 5 and ``kvCacheUtilThreshold`` 0.8). The room of the pool is the
requests it may still take, ``threshold - waiting`` summed over the unsaturated ready endpoints, less what the router
sent since the last scrape (so that one scrape does not let a whole queue through). Inside a band, first in first
out; higher bands go first.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

from llmd_kserve.bench.workloads import RequestSpec
from llmd_kserve.types import EndpointState


def band_of(spec: RequestSpec) -> int:
    """A request's priority band (0 without an objective)."""
    return spec.objective.priority if spec.objective is not None else 0


class FlowGate:
    """The router's per-band queue in front of the scheduler."""

    def __init__(self, queue_depth_threshold: int = 5, kv_threshold: float = 0.8) -> None:
        self.queue_depth_threshold = queue_depth_threshold
        self.kv_threshold = kv_threshold
        self.bands: dict[int, deque[RequestSpec]] = {}
        self._released: set[str] = set()
        self._sent = 0  # requests let through since the last scrape
        self.waited = 0
        """Requests that had to wait (in all)."""

    def room(self, ready: Sequence[EndpointState]) -> int:
        """Requests the ready endpoints may still take before the next scrape shows them."""
        free = sum(max(self.queue_depth_threshold - e.metrics.waiting, 0) for e in ready
                   if e.metrics.kv_usage < self.kv_threshold)
        return free - self._sent

    def hold(self, spec: RequestSpec, ready: Sequence[EndpointState]) -> bool:
        """Whether ``spec`` (arriving now) must wait: a request released from the queue passes, a newcomer waits
        while its band or a higher one has a queue or the pool has no room."""
        rid = spec.request_id
        if rid in self._released:
            self._released.discard(rid)
            return False
        band = band_of(spec)
        ahead = any(q for b, q in self.bands.items() if b >= band)
        if not ahead and self.room(ready) > 0:
            self._sent += 1
            return False
        self.bands.setdefault(band, deque()).append(spec)
        self.waited += 1
        return True

    def release(self, ready: Sequence[EndpointState]) -> list[RequestSpec]:
        """The queued requests that may go now (highest band first), marked to pass :meth:`hold` once."""
        out: list[RequestSpec] = []
        room = self.room(ready)
        for band in sorted(self.bands, reverse=True):
            q = self.bands[band]
            while q and room > 0:
                spec = q.popleft()
                self._released.add(spec.request_id)
                out.append(spec)
                room -= 1
        self._sent += len(out)
        return out

    def scraped(self) -> None:
        """A fresh scrape shows what was sent so far."""
        self._sent = 0

    def depth(self) -> dict[int, int]:
        """``llmd_router_queue_depth{band}``: waiting requests per band (0 for bands seen before)."""
        return {band: len(q) for band, q in self.bands.items()}
