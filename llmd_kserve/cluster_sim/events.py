"""The simulator's events (typed, dispatched by ``match``) and the record of a request in flight."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from llmd_kserve.bench.workloads import RequestSpec
from llmd_kserve.scheduling.interface import SchedulingResult
from llmd_kserve.types import LLMRequest


class LiveRequest:
    """A request between its arrival and its last token."""

    __slots__ = ("spec", "llm", "sched", "engine", "arrival", "first", "last", "itl", "n_out", "cached", "n_prompt",
                 "held", "fallback", "router")

    def __init__(self, spec: RequestSpec, llm: LLMRequest, sched: SchedulingResult, engine: int, arrival: float,
                 n_prompt: int, router: int = 0) -> None:
        self.spec, self.llm, self.sched, self.engine, self.arrival = spec, llm, sched, engine, arrival
        self.router = router
        """The router replica that scheduled it (and hears of its completion)."""
        self.first: float | None = None
        self.last = arrival
        self.itl: list[float] = []
        self.n_out = 0
        self.cached: int | None = None
        self.n_prompt = n_prompt
        self.held: tuple[int, str] | None = None
        """P/D: (prefill engine, leg id) whose held blocks the decode leg pulls."""
        self.fallback: str | None = None
        """P/D: why the prefill leg failed (the decode engine then prefills locally)."""


@dataclass(frozen=True, slots=True)
class Arrive:
    """A workload request reaches the router."""

    spec: RequestSpec


@dataclass(frozen=True, slots=True)
class Deliver:
    """A routed request (or a P/D decode leg) reaches its engine's queue."""

    request_id: str


@dataclass(frozen=True, slots=True)
class Step:
    """Engine ``engine``'s step in progress ends: its tokens exist now."""

    engine: int


@dataclass(frozen=True, slots=True)
class Scrape:
    """Router ``router`` scrapes every engine: their counters become its fresh metrics snapshots."""

    router: int = 0


@dataclass(frozen=True, slots=True)
class PrefillArrive:
    """The prefill leg of a P/D request reaches the prefill engine."""

    request: LiveRequest


@dataclass(frozen=True, slots=True)
class PrefillTimeout:
    """The router's prefill timeout for a P/D request expires."""

    request: LiveRequest


@dataclass(frozen=True, slots=True)
class Share:
    """Router ``origin``'s in-flight bookkeeping (``hook`` of its ``inflight-load-producer`` with ``args``) reaches
    the other router replicas through the shared load view."""

    origin: int
    hook: str
    args: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class ScalePoll:
    """The autoscaler reads the router's signals and asks its policy for a replica count."""


@dataclass(frozen=True, slots=True)
class ReplicaReady:
    """Replica ``engine`` finished starting: the router may schedule to it."""

    engine: int


Event = Arrive | Deliver | Step | Scrape | PrefillArrive | PrefillTimeout | Share | ScalePoll | ReplicaReady
