"""Router replicas of the simulated cluster: each with its own scheduler, KV index and scrapes; the balancer in front.

Active-active router replicas share nothing but the engines. Each :class:`SimRouter` has

* its own scheduler, built from the same config, so its own plugin state: in-flight charges and prefill backlog
  (``inflight-load-producer``), approximate prefix index, session table, picker state;
* its own KV index, fed by every engine's KV events with its own delivery delay (``SimOptions.router_kv_event_delays``);
* its own metrics snapshots, scraped every ``scrape_interval`` at its own phase (router ``k`` of ``n`` first scrapes at
  ``k * scrape_interval / n``): other replicas' work shows only through the engines' scraped queues and KV usage.

A :class:`Balancer` (the Service or Envoy in front of the replicas) spreads requests over them: ``round-robin``,
``random``, or ``prefix-hash`` (a hash of the request's prefix key, so each replica owns a slice of the prefixes).
With one router, everything here reduces to the single router of earlier releases, result for result.
"""

from __future__ import annotations

import random
import zlib
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

from llmd_kserve.bench.workloads import RequestSpec
from llmd_kserve.cluster_sim.engines import VirtualReplica
from llmd_kserve.config.build import build_scheduler
from llmd_kserve.config.schema import SchedulerConfig
from llmd_kserve.kvcache.events import KVEvent
from llmd_kserve.kvcache.index import KVIndex
from llmd_kserve.latency import LatencyProfile
from llmd_kserve.scheduling.scheduler import PluginContext, Scheduler
from llmd_kserve.tokenizer import SimTokenizer
from llmd_kserve.types import EndpointId, EndpointState

BalancerPolicy = Literal["round-robin", "random", "prefix-hash"]
BALANCERS: tuple[BalancerPolicy, ...] = ("round-robin", "random", "prefix-hash")
PREFIX_KEY_CHARS = 256
"""``prefix-hash`` without a group or session: the hash covers this many leading characters of the prompt."""


def router_rng(seed: int, k: int) -> random.Random:
    """Router ``k``'s plugin RNG: router 0 keeps the single router's seed."""
    return random.Random(seed if k == 0 else f"{seed}/router-{k}")


class SimRouter:
    """One router replica: its scheduler, KV index, KV events in flight to it and its latest metrics snapshots."""

    __slots__ = ("k", "scheduler", "index", "uses_index", "kv_event_delay", "kv", "states")

    def __init__(self, k: int, config: str | Path | SchedulerConfig, *, profile: LatencyProfile, seed: int,
                 clock: Callable[[], float], kv_event_delay: float) -> None:
        self.k = k
        self.index = KVIndex()
        ctx = PluginContext(tokenizer=SimTokenizer(), index=self.index, rng=router_rng(seed, k), clock=clock,
                            profile=profile, block_size=profile.block_size)
        self.scheduler: Scheduler = build_scheduler(config, ctx)
        self.uses_index = any(p.type == "precise-prefix-producer" for p in self.scheduler.producers)
        self.kv_event_delay = kv_event_delay
        self.kv: list[deque[tuple[float, tuple[KVEvent, ...]]]] = []
        """Per engine: (time visible in this router's index, events), oldest first."""
        self.states: list[EndpointState] = []

    def attach(self, engines: Sequence[VirtualReplica]) -> None:
        """Start with the engines' unscraped snapshots and no KV events in flight."""
        self.kv = [deque() for _ in engines]
        self.states = [e.state for e in engines]

    def add_engine(self, engine: VirtualReplica) -> None:
        """A replica started (autoscaling): its unscraped snapshot, no KV events in flight."""
        self.kv.append(deque())
        self.states.append(engine.state)

    def remove_engine(self, i: int, eid: EndpointId) -> None:
        """Replica ``i`` was removed: its KV events in flight are dropped and the router forgets it."""
        self.kv[i].clear()
        self.index.remove_endpoint(eid)
        self.scheduler.remove_endpoint(eid)

    def send_kv(self, i: int, t: float, events: tuple[KVEvent, ...]) -> None:
        """Engine ``i``'s KV events of a step that ended at ``t`` start on their way to this router."""
        self.kv[i].append((t + self.kv_event_delay, events))

    def apply_kv(self, engines: Sequence[VirtualReplica], t: float) -> None:
        """Apply the KV events that reached this router's index by ``t`` (engine by engine, in order)."""
        for eng, kv in zip(engines, self.kv, strict=True):
            while kv and kv[0][0] <= t:
                self.index.apply(eng.id, kv.popleft()[1])

    def scrape(self, engines: Sequence[VirtualReplica], t: float) -> None:
        """This router's scraper polls every engine now."""
        self.states = [e.snapshot(t) for e in engines]


class Balancer:
    """Picks the router replica a request goes to (what a Kubernetes Service or Envoy does in front of them)."""

    def __init__(self, policy: BalancerPolicy, routers: int, seed: int) -> None:
        if policy not in BALANCERS:
            raise ValueError(f"balancer must be one of {', '.join(BALANCERS)}, got {policy!r}")
        self.policy, self.n = policy, routers
        self._rng = random.Random(f"{seed}/balancer")
        self._next = 0

    def pick(self, spec: RequestSpec) -> int:
        if self.n == 1:
            return 0
        if self.policy == "round-robin":
            k, self._next = self._next, (self._next + 1) % self.n
            return k
        if self.policy == "random":
            return self._rng.randrange(self.n)
        key = spec.group or spec.session_id or spec.prompt[:PREFIX_KEY_CHARS]
        return zlib.crc32(key.encode()) % self.n
