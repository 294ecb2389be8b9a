"""Flow control in front of the scheduler (llm-d's model): priority bands, per-tenant fairness, TTL, band capacity.

Requests are dispatched at once while fewer than ``capacity()`` are in flight and nobody of the same or a higher
band waits who may go; otherwise they queue in their band. When a request finishes, the highest band with a waiting
request dispatches next, and inside a band the tenant with the fewest requests in flight goes first (ties: the
one served least recently). So that a tenant flooding the gateway cannot starve another:
- headroom: the last ``headroom`` slots only go to a tenant that holds none, so a tenant arriving while others hold
  every slot they may take still finds one at once, whatever its band;
- fair share: while several tenants are active (a request in the last ``active_window_s``), none holds more than
  ``ceil(capacity / active tenants)`` slots, nor more than its share of a band's queue.
A key's ``max_concurrency`` counts that key's own requests in flight (not its tenant's): over it, a request waits
for one of them to finish, or, with ``wait_for_key_slot`` off (a gateway without flow control), is refused (429
``concurrency``). A full band refuses with 429 (``band_full``; ``tenant_queue_full`` when a tenant holds its share
of the band already); a request that waits longer than ``ttl_s`` is dropped with 503 (``ttl_expired``).
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
    headroom: int = 1
    """Slots kept for a tenant that holds none: one that holds some may start only below capacity - headroom."""
    wait_for_key_slot: bool = True
    """Over its key's ``max_concurrency`` a request queues (True) or is refused with 429 ``concurrency`` (False)."""
    turn_priority: bool = True
    """Inside a band, a queued turn that continues a live session is dispatched before a new session's first turn
    (then tenant fairness decides among them)."""


@dataclass(eq=False, slots=True)
class Waiting:
    tenant: str
    priority: int
    enqueued_at: float
    max_concurrency: int | None = None
    key: str = ""
    """The key ``max_concurrency`` counts against (empty: the tenant)."""
    dispatched: bool = False
    turn: bool = False
    """It continues a live session (turn priority)."""

    @property
    def counted_as(self) -> str:
        return self.key or self.tenant


@dataclass(slots=True)
class FlowQueue:
    """The synchronous core: ``offer`` → dispatched now or queued (or ``RateLimited``); ``release`` → who goes next."""

    capacity: Callable[[], int]
    policy: FlowPolicy = FlowPolicy()
    clock: Callable[[], float] = time.monotonic
    in_flight: int = 0
    tenant_in_flight: dict[str, int] = field(default_factory=dict)
    key_in_flight: dict[str, int] = field(default_factory=dict)
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

    def _tenant_limit(self) -> int:
        """Most slots a tenant that already holds one may hold now (headroom and fair share); 0: none more."""
        cap = self.capacity()
        if self.in_flight >= cap - self.policy.headroom:
            return 0
        n = self._active() if self.policy.fair_share else 1
        return -(-cap // n) if n > 1 else cap

    def _tenant_may_start(self, tenant: str, limit: int | None = None) -> bool:
        held = self.tenant_in_flight.get(tenant, 0)
        return not held or held < (self._tenant_limit() if limit is None else limit)

    def _key_may_start(self, w: Waiting) -> bool:
        return w.max_concurrency is None or self.key_in_flight.get(w.counted_as, 0) < w.max_concurrency

    def _start(self, w: Waiting) -> None:
        w.dispatched = True
        self.dispatches += 1
        self.last_served[w.tenant] = self.dispatches
        if len(self.last_served) > 4 * MAX_TENANTS:  # forget idle tenants: bounded memory
            for t in [t for t in self.last_served if t not in self.tenant_in_flight][: len(self.last_served) // 2]:
                del self.last_served[t]
        self.in_flight += 1
        self.tenant_in_flight[w.tenant] = self.tenant_in_flight.get(w.tenant, 0) + 1
        self.key_in_flight[w.counted_as] = self.key_in_flight.get(w.counted_as, 0) + 1

    def offer(self, tenant: str, priority: int = 0, max_concurrency: int | None = None, key: str = "",
              turn: bool = False) -> Waiting:
        """A request arrives: the returned ``Waiting`` is ``dispatched`` or queued; a full band raises 429.
        ``turn``: it continues a live session (``FlowPolicy.turn_priority``)."""
        w = Waiting(tenant, priority, self.clock(), max_concurrency, key, turn=turn)
        self.last_seen[tenant] = w.enqueued_at
        key_ok = self._key_may_start(w)
        if not key_ok and not self.policy.wait_for_key_slot:
            raise RateLimited(f"This API key allows {max_concurrency} request(s) in flight at once; retry when one "
                              "has finished.", "concurrency", 1.0)
        if (self.in_flight < self.capacity() and key_ok and self._tenant_may_start(tenant)
                and not self._eligible_waiting(priority)):
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
            for counts, name in ((self.tenant_in_flight, w.tenant), (self.key_in_flight, w.counted_as)):
                n = counts.get(name, 1) - 1
                if n:
                    counts[name] = n
                else:
                    counts.pop(name, None)
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
        bands = sorted((p for p, n in self.queued.items() if n), reverse=True)
        limit = self._tenant_limit() if bands else 0
        turns = self.policy.turn_priority
        for p in bands:
            best, rank = None, None
            for tenant, q in self.bands[p].items():
                if not q or not self._tenant_may_start(tenant, limit):
                    continue
                w = next((w for w in q if w.turn and self._key_may_start(w)), None) if turns else None
                if w is None:
                    w = next((w for w in q if self._key_may_start(w)), None)  # a key at its limit blocks only itself
                if w is None:
                    continue
                r = (turns and not w.turn, self.tenant_in_flight.get(tenant, 0), self.last_served.get(tenant, 0),
                     w.enqueued_at)
                if rank is None or r < rank:
                    best, rank = w, r
            if best is not None:
                return best
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

    async def acquire(self, tenant: str, priority: int = 0, max_concurrency: int | None = None,
                      key: str = "", turn: bool = False) -> Waiting:
        w = self.queue.offer(tenant, priority, max_concurrency, key, turn)
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
