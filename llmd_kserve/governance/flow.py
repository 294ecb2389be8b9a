"""Flow control in front of the scheduler (llm-d's model): priority bands, per-tenant fairness, TTL, band capacity.

Requests are dispatched at once while fewer than ``capacity()`` are in flight and nobody of the same or a higher
band waits who may go; otherwise they queue in their band. When a request finishes, the highest band with a waiting
request dispatches next, and inside a band the tenant with the fewest requests in flight goes first (ties: the
one served least recently), so a tenant flooding the gateway cannot starve another; and while several tenants
are active (a request in the last ``active_window_s``), none holds more than its fair share of the slots, so
another tenant's next request finds a free one (a tenant alone may use them all). A full band refuses with 429
(drop reason ``band_full``; ``tenant_queue_full`` when a tenant holds its share of the band already); a request that waits longer than ``ttl_s`` is dropped with 503 (``ttl_expired``).
``FlowQueue`` is the synchronous core (injected clock, no I/O); ``FlowController`` awaits it on asyncio.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from llmd_kserve.governance.limits import RateLimited

MAX_TENANTS = 4096


@dataclass(frozen=True, slots=True)
class FlowPolicy:
    per_band_capacity: int = 1024
    """Most requests waiting in one priority band."""
    ttl_s: float = 30.0
    """Most seconds a request may wait for dispatch."""
    fair_share: bool = True
    """While several tenants are active, each may hold at most ceil(capacity / active tenants) slots."""
    active_window_s: float = 5.0
    """A tenant counts as active for this long after its last request."""


@dataclass(eq=False, slots=True)
class Waiting:
    tenant: str
    priority: int
    enqueued_at: float
    max_concurrency: int | None = None
    dispatched: bool = False


@dataclass(slots=True)
class FlowQueue:
    """The synchronous core: ``offer`` → dispatched now or queued (or ``RateLimited``); ``release`` → who goes next."""

    capacity: Callable[[], int]
    policy: FlowPolicy = FlowPolicy()
    clock: Callable[[], float] = time.monotonic
    in_flight: int = 0
    tenant_in_flight: dict[str, int] = field(default_factory=dict)
    bands: dict[int, dict[str, deque[Waiting]]] = field(default_factory=dict)
    queued: dict[int, int] = field(default_factory=dict)
    last_served: dict[str, int] = field(default_factory=dict)
    """Tenant -> dispatch count when it was last dispatched (ties go to the one served least recently)."""
    dispatches: int = 0
    last_seen: dict[str, float] = field(default_factory=dict)
    """Tenant -> when its last request arrived (for the fair share)."""

    def _eligible_waiting(self, priority: int) -> bool:
        """Whether a request of this or a higher band waits that may go now (it goes before a newcomer)."""
        nxt = self._next()
        return nxt is not None and nxt.priority >= priority

    def _active(self) -> int:
        limit = self.clock() - self.policy.active_window_s
        if len(self.last_seen) > MAX_TENANTS:
            for t in [t for t, at in self.last_seen.items() if at < limit and t not in self.tenant_in_flight]:
                del self.last_seen[t]
        return sum(1 for t, at in self.last_seen.items() if at >= limit or t in self.tenant_in_flight)

    def _under_cap(self, w: Waiting) -> bool:
        held = self.tenant_in_flight.get(w.tenant, 0)
        if w.max_concurrency is not None and held >= w.max_concurrency:
            return False
        if self.policy.fair_share and held:
            n = self._active()
            if n > 1 and held >= -(-self.capacity() // n):
                return False
        return True

    def _start(self, w: Waiting) -> None:
        w.dispatched = True
        self.dispatches += 1
        self.last_served[w.tenant] = self.dispatches
        if len(self.last_served) > 4 * MAX_TENANTS:  # forget idle tenants: bounded memory
            for t in [t for t in self.last_served if t not in self.tenant_in_flight][: len(self.last_served) // 2]:
                del self.last_served[t]
        self.in_flight += 1
        self.tenant_in_flight[w.tenant] = self.tenant_in_flight.get(w.tenant, 0) + 1

    def offer(self, tenant: str, priority: int = 0, max_concurrency: int | None = None) -> Waiting:
        """A request arrives: the returned ``Waiting`` is ``dispatched`` or queued; a full band raises 429."""
        w = Waiting(tenant, priority, self.clock(), max_concurrency)
        self.last_seen[tenant] = w.enqueued_at
        if self.in_flight < self.capacity() and self._under_cap(w) and not self._eligible_waiting(priority):
            self._start(w)
            return w
        cap = self.policy.per_band_capacity
        if self.queued.get(priority, 0) >= cap:
            raise RateLimited(f"Gateway queue for priority {priority} is full; retry later.", "band_full", 1.0)
        mine = self.bands.get(priority, {}).get(tenant)
        if self.policy.fair_share and mine and len(mine) >= -(-cap // max(1, self._active())):
            raise RateLimited(f"Your share of the gateway queue for priority {priority} is full; retry later.",
                              "tenant_queue_full", 1.0)
        self.bands.setdefault(priority, {}).setdefault(tenant, deque()).append(w)
        self.queued[priority] = self.queued.get(priority, 0) + 1
        return w

    def _pop(self, w: Waiting) -> None:
        q = self.bands[w.priority][w.tenant]
        q.remove(w)
        if not q:
            del self.bands[w.priority][w.tenant]
        self.queued[w.priority] -= 1

    def withdraw(self, w: Waiting) -> None:
        """A queued request gives up (timed out, client gone)."""
        if not w.dispatched:
            self._pop(w)

    def release(self, w: Waiting) -> list[Waiting]:
        """A dispatched request finished: free its slot and dispatch whoever may go now (returned)."""
        if w.dispatched:
            w.dispatched = False
            self.in_flight -= 1
            n = self.tenant_in_flight.get(w.tenant, 1) - 1
            if n:
                self.tenant_in_flight[w.tenant] = n
            else:
                self.tenant_in_flight.pop(w.tenant, None)
        return self.dispatch()

    def dispatch(self) -> list[Waiting]:
        out: list[Waiting] = []
        while self.in_flight < self.capacity():
            nxt = self._next()
            if nxt is None:
                break
            self._pop(nxt)
            self._start(nxt)
            out.append(nxt)
        return out

    def _next(self) -> Waiting | None:
        for p in sorted((p for p, n in self.queued.items() if n), reverse=True):
            heads = [q[0] for q in self.bands[p].values() if q and self._under_cap(q[0])]
            if heads:
                return min(heads, key=lambda h: (self.tenant_in_flight.get(h.tenant, 0),
                                                 self.last_served.get(h.tenant, 0), h.enqueued_at))
        return None

    def expired(self) -> list[Waiting]:
        """Queued requests older than the TTL, removed."""
        limit = self.clock() - self.policy.ttl_s
        old = [w for band in self.bands.values() for q in band.values() for w in q if w.enqueued_at <= limit]
        for w in old:
            self._pop(w)
        return old

    def depth(self) -> dict[int, int]:
        return {p: n for p, n in self.queued.items() if n}


class FlowController:
    """``FlowQueue`` on asyncio: ``await acquire`` waits for dispatch (429/503 on a drop); ``release`` when done."""

    def __init__(self, queue: FlowQueue) -> None:
        self.queue = queue
        self._futures: dict[int, asyncio.Future[None]] = {}

    async def acquire(self, tenant: str, priority: int = 0, max_concurrency: int | None = None) -> Waiting:
        w = self.queue.offer(tenant, priority, max_concurrency)
        if w.dispatched:
            return w
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._futures[id(w)] = fut
        try:
            async with asyncio.timeout(self.queue.policy.ttl_s):
                await fut
        except TimeoutError:
            if w.dispatched:  # dispatched just as the TTL fired: it goes (dropping it would leak its slot)
                return w
            self.queue.withdraw(w)
            raise RateLimited(f"Request waited {self.queue.policy.ttl_s:g} s in the gateway queue without a free "
                              "slot; retry later.", "ttl_expired", 1.0, status=503,
                              code_type="ServiceUnavailableError") from None
        except asyncio.CancelledError:
            if w.dispatched:
                self.release(w)
            else:
                self.queue.withdraw(w)
            raise
        finally:
            self._futures.pop(id(w), None)
        return w

    def release(self, w: Waiting) -> None:
        for nxt in self.queue.release(w):
            fut = self._futures.get(id(nxt))
            if fut is not None and not fut.done():
                fut.set_result(None)
            elif fut is None:  # its waiter is gone: give the slot on
                self.release(nxt)

    def kick(self) -> None:
        """Dispatch after the capacity grew (endpoints added)."""
        for nxt in self.queue.dispatch():
            fut = self._futures.get(id(nxt))
            if fut is not None and not fut.done():
                fut.set_result(None)
