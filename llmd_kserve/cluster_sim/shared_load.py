"""The shared load view of router replicas: each publishes its in-flight charges, the others apply them after a delay.

Without it a router replica knows only the requests it sent itself; the others' show up in the engines' scraped
queues one scrape later at best, and the prefill backlog the default config predicts TTFT from (``backlog: queue``)
never shows them at all. With it (``SimOptions.shared_load_delay``), every decision a replica's
``inflight-load-producer`` records (``on_scheduled``: the request's charge and predicted prefill work on its
endpoint; ``on_prefill_complete``, ``on_complete``: their release) reaches every other replica's producer
``delay`` seconds later, as if published to a store the replicas share (live, that store would be the Redis the
replicas already share for governance, ``--state-url``). Only the load view is shared by default: prefix indexes,
session tables and pickers stay each replica's own. ``SimOptions.shared_plugins`` may add plugin types whose
decision bookkeeping is shared the same way: ``approx-prefix-cache-producer`` (llm-d's approximate prefix index,
which learns only from the decisions its own replica makes), ``precise-prefix-producer`` (its speculative entries:
blocks a request was just sent with, before the engine's KV events confirm them).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from llmd_kserve.cluster_sim.events import Event, Share
from llmd_kserve.cluster_sim.routers import SimRouter
from llmd_kserve.plugins.base import CycleState, HandlerDecision
from llmd_kserve.scheduling.interface import SchedulingResult
from llmd_kserve.types import LLMRequest, RequestOutcome

LOAD_PRODUCER = "inflight-load-producer"
HOOKS = ("on_scheduled", "on_complete", "on_prefill_complete")


class SharedLoadView:
    """Publishes each router replica's in-flight charges to the others, ``delay_s`` later (events on the sim's heap)."""

    def __init__(self, routers: Sequence[SimRouter], delay_s: float, push: Callable[[float, Event], None],
                 clock: Callable[[], float], plugin_types: Sequence[str] = (LOAD_PRODUCER,)) -> None:
        if delay_s < 0:
            raise ValueError(f"shared_load_delay must be >= 0, got {delay_s}")
        self.delay_s, self._push, self._clock = delay_s, push, clock
        types = set(plugin_types)
        self.producers: list[list[Any]] = [
            [p for p in {id(p): p for p in (*r.scheduler.producers, *r.scheduler.plugins.values())}.values()
             if p.type in types] for r in routers]
        self.published = 0
        for k, r in enumerate(routers):
            if self.producers[k]:
                r.scheduler.add_on_scheduled(partial(self._scheduled, k))

    def _publish(self, origin: int, hook: str, args: tuple[Any, ...]) -> None:
        if self.producers[origin]:
            self.published += 1
            self._push(self._clock() + self.delay_s, Share(origin, hook, args))

    def _scheduled(self, origin: int, state: CycleState, decision: HandlerDecision) -> None:
        self._publish(origin, "on_scheduled", (state, decision))

    def completed(self, origin: int, request: LLMRequest, result: SchedulingResult, outcome: RequestOutcome) -> None:
        """Router ``origin`` released a finished (or failed) request."""
        self._publish(origin, "on_complete", (request, _decision(result), outcome))

    def prefill_completed(self, origin: int, request: LLMRequest, result: SchedulingResult,
                          outcome: RequestOutcome) -> None:
        """Router ``origin`` released a P/D request's prefill endpoint."""
        self._publish(origin, "on_prefill_complete", (request, _decision(result), outcome))

    def apply(self, share: Share) -> None:
        """The published bookkeeping reaches every other replica's load producer."""
        for k, producers in enumerate(self.producers):
            if k != share.origin:
                for p in producers:
                    hook = getattr(p, share.hook, None)
                    if hook is not None:
                        hook(*share.args)


def _decision(result: SchedulingResult) -> HandlerDecision:
    return HandlerDecision(result.profile, result.target, result.prefill)
