"""The scheduler new requests get, swapped by a config change; each request keeps the one that scheduled it."""

from __future__ import annotations

from llmd_kserve.scheduling.scheduler import Scheduler
from llmd_kserve.types import EndpointId


class SchedulerHolder:
    """The scheduler new requests are scheduled with (``current``); a config change swaps it. A request keeps the
    scheduler that scheduled it (``acquire``, on its ticket) and is settled there (``release``), so a swap in the
    middle of a request changes nothing for it."""

    def __init__(self, scheduler: Scheduler) -> None:
        self.current = scheduler
        self._busy: dict[int, tuple[Scheduler, int]] = {}
        """id -> (scheduler, results it made that are not completed): the object is held, so its id is its own."""

    def swap(self, scheduler: Scheduler) -> None:
        self.current = scheduler

    def acquire(self) -> Scheduler:
        """The current scheduler, counted busy until :meth:`release`."""
        sched = self.current
        _, n = self._busy.get(id(sched), (sched, 0))
        self._busy[id(sched)] = (sched, n + 1)
        return sched

    def release(self, sched: Scheduler) -> None:
        _, n = self._busy.get(id(sched), (sched, 1))
        if n <= 1:
            self._busy.pop(id(sched), None)
        else:
            self._busy[id(sched)] = (sched, n - 1)

    def remove_endpoint(self, endpoint_id: EndpointId) -> None:
        """Forget the endpoint in the current scheduler and in every older one still serving requests."""
        for sched in {id(self.current): self.current, **{k: v[0] for k, v in self._busy.items()}}.values():
            sched.remove_endpoint(endpoint_id)

    def in_flight(self) -> int:
        """Results scheduled and not completed yet (all configs)."""
        return sum(n for _, n in self._busy.values())
