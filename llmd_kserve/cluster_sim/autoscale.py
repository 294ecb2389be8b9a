"""Replicas that start and stop during a simulated run, driven by a scaling policy polled on the router's signals.

* **Start**: a new replica (a new endpoint id, like a new pod) is asked for at a poll; it becomes schedulable
  ``startup_s`` later (the model load) with an empty KV cache, and the router's endpoint set gains it then, as pod
  discovery adds a ready pod.
* **Stop**: a replica taken out of service is *drained*: the router stops sending it requests at once, it finishes
  those in flight, then it is removed (its KV index entries and the scheduler's memory of it are dropped). A
  replica still starting is cancelled first (Kubernetes deletes unready pods first); otherwise the least busy one
  drains.
* **Accounting**: every replica's seconds from its start request (start-up included) to its removal, or to the end
  of the run, make the GPU-hours.

The router's signals come from :mod:`llmd_kserve.cluster_sim.scaling`'s :class:`RouterSignals`: the flow-control
queue per band (:mod:`llmd_kserve.cluster_sim.flow_gate`), the predicted TTFT headroom of a reference request (the
``latency-slo-admitter``'s prediction, for a prompt of the mean length routed since the last poll, uncached) and the
mean KV usage.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from llmd_kserve.bench.stats import SLO, RequestResult
from llmd_kserve.cluster_sim.engines import VirtualReplica, engine_id
from llmd_kserve.cluster_sim.flow_gate import FlowGate
from llmd_kserve.cluster_sim.scaling import RouterSignals, ScalingPolicy, make_policy
from llmd_kserve.engine_sim.core import EngineCore
from llmd_kserve.engine_sim.frontend import Frontend
from llmd_kserve.plugins.base import CycleState
from llmd_kserve.scheduling.ttft import TTFTEstimator, TTFTParams
from llmd_kserve.types import EndpointState, LLMRequest

if TYPE_CHECKING:
    from llmd_kserve.bench.workloads import RequestSpec
    from llmd_kserve.cluster_sim.sim import ClusterSim

Phase = Literal["starting", "ready", "draining", "removed"]


@dataclass(frozen=True, slots=True)
class AutoscaleOptions:
    """The autoscaler of a simulated run: its policy, bounds and timing."""

    policy: ScalingPolicy
    min_replicas: int = 1
    max_replicas: int = 16
    initial_replicas: int | None = None
    """Replicas ready at time 0 (None: ``min_replicas``)."""
    startup_s: float = 60.0
    """Seconds from asking for a replica until the router may schedule to it (pod start, model load)."""
    poll_s: float = 15.0
    """Seconds between two polls of the signals (KEDA's ``pollingInterval``, HPA's sync period)."""
    ttft_target_s: float = 2.0
    """The TTFT target the headroom is measured against (and, with ``tpot_target_s``, the misses counted)."""
    tpot_target_s: float = 0.05
    miss_window_s: float | None = None
    """Seconds of answered requests the miss ratio covers (None: four poll intervals)."""
    flow_control: bool = True
    """Queue requests at the router while every ready endpoint is saturated (see ``flow_gate``)."""

    def __post_init__(self) -> None:
        if not 1 <= self.min_replicas <= self.max_replicas:
            raise ValueError("need 1 <= min_replicas <= max_replicas")
        if self.initial_replicas is not None and not self.min_replicas <= self.initial_replicas <= self.max_replicas:
            raise ValueError("initial_replicas must lie within min_replicas..max_replicas")
        if self.startup_s < 0 or self.poll_s <= 0:
            raise ValueError("startup_s must be >= 0 and poll_s > 0")

    @property
    def initial(self) -> int:
        return self.initial_replicas if self.initial_replicas is not None else self.min_replicas


def autoscale_options(policy: str | ScalingPolicy, *, min_replicas: int = 1, max_replicas: int = 16,
                      initial_replicas: int | None = None, startup_s: float = 60.0, poll_s: float = 15.0,
                      ttft_target_s: float = 2.0, tpot_target_s: float = 0.05,
                      static_replicas: int | None = None, keda_target: float = 2.0,
                      stabilization_s: float = 300.0, cooldown_s: float = 120.0,
                      flow_control: bool = True) -> AutoscaleOptions:
    """Autoscale options with the policy given by name (``scaling.POLICIES``) or as an object; ``static`` keeps
    ``static_replicas`` (default: the initial count)."""
    if isinstance(policy, str):
        fixed = static_replicas or initial_replicas or min_replicas
        policy = make_policy(policy, replicas=fixed, ttft_target_s=ttft_target_s, keda_target=keda_target,
                             stabilization_s=stabilization_s, cooldown_s=cooldown_s)
    return AutoscaleOptions(policy, min_replicas=min_replicas, max_replicas=max_replicas,
                            initial_replicas=initial_replicas, startup_s=startup_s, poll_s=poll_s,
                            ttft_target_s=ttft_target_s, tpot_target_s=tpot_target_s, flow_control=flow_control)


@dataclass(slots=True)
class ReplicaLife:
    """One replica's lifetime on the virtual clock."""

    index: int
    asked_at: float
    ready_at: float | None = None
    drain_at: float | None = None
    removed_at: float | None = None
    phase: Phase = "starting"

    def seconds(self, end: float) -> float:
        """Seconds it held a GPU by ``end`` (from its start request)."""
        return max((self.removed_at if self.removed_at is not None else end) - self.asked_at, 0.0)


@dataclass(slots=True)
class ReplicaCurve:
    """The replica counts at every poll and change: (t, ready, starting, draining, desired)."""

    points: list[tuple[float, int, int, int, int]] = field(default_factory=list)


class Autoscaler:
    """The replica set of one :class:`ClusterSim` run; the simulator calls its hooks."""

    def __init__(self, sim: ClusterSim, options: AutoscaleOptions) -> None:
        self.sim = sim
        self.options = options
        self.gate = FlowGate() if options.flow_control else None
        self.lives: list[ReplicaLife] = []
        self.assigned: Counter[int] = Counter()
        self.curve = ReplicaCurve()
        self.decisions = 0
        self._slo = SLO(options.ttft_target_s, options.tpot_target_s)
        self._answered: deque[tuple[float, bool]] = deque()  # (time, missed its targets) of answered requests
        self._prompt_sum = 0
        self._prompt_n = 0
        self._last_prompt = 1024
        admitter = next((p for p in sim.scheduler.plugins.values() if getattr(p, "type", "") == "latency-slo-admitter"),
                        None)
        params = admitter.params if admitter is not None else TTFTParams(backlog="queue")
        self._ttft = TTFTEstimator(params, sim.scheduler.ctx)

    # --- the replica set ----------------------------------------------------------------------------------------
    def build(self) -> list[VirtualReplica]:
        """The replicas ready at time 0."""
        engines = [self._new_replica(i) for i in range(self.options.initial)]
        for i in range(len(engines)):
            self.lives.append(ReplicaLife(i, 0.0, ready_at=0.0, phase="ready"))
        self.curve.points.append((0.0, len(engines), 0, 0, len(engines)))
        return engines

    def _new_replica(self, i: int) -> VirtualReplica:
        sim, o = self.sim, self.sim.options
        core = EngineCore(sim.profile, num_blocks=o.num_blocks, max_num_seqs=o.max_num_seqs,
                          max_num_batched_tokens=o.max_num_batched_tokens, seed=o.seed + i,
                          enable_kv_events=sim.uses_index)
        return VirtualReplica(engine_id("both", i), "both", core)

    def schedulable(self, states: list[EndpointState] | None = None) -> list[EndpointState]:
        """A router's endpoint set: the ready replicas' latest snapshots in ``states`` (one per engine, as that
        router scraped them; default: the first router's)."""
        states = self.sim.routers[0].states if states is None else states
        return [states[life.index] for life in self.lives if life.phase == "ready"]

    def count(self, phase: Phase) -> int:
        return sum(life.phase == phase for life in self.lives)

    # --- hooks the simulator calls ------------------------------------------------------------------------------
    def hold(self, spec: RequestSpec, t: float) -> bool:
        """Flow control: whether an arriving request waits at the router (its wait counts against its TTFT)."""
        if self.gate is None or not self.gate.hold(spec, self.schedulable()):
            return False
        self.sim._held.setdefault(spec.request_id, t)
        return True

    def on_scrape(self, t: float) -> None:
        if self.gate is not None:
            self.gate.scraped()
            self._release(t)

    def _release(self, t: float) -> None:
        if self.gate is not None:
            from llmd_kserve.cluster_sim.events import Arrive

            for spec in self.gate.release(self.schedulable()):
                self.sim.push(t, Arrive(spec))

    def routed(self, engine: int, prompt_tokens: int) -> None:
        self.assigned[engine] += 1
        self._prompt_sum += prompt_tokens
        self._prompt_n += 1

    def released(self, engine: int, t: float, result: RequestResult) -> None:
        """A request on ``engine`` ended (``result``); a draining replica with none left is removed."""
        self._answered.append((t, not self._slo.met(result)))
        self.assigned[engine] -= 1
        life = self.lives[engine]
        if life.phase == "draining" and self.assigned[engine] <= 0:
            self._remove(life, t)

    def ready(self, index: int, t: float) -> None:
        life = self.lives[index]
        if life.phase != "starting":
            return  # cancelled while starting
        life.phase, life.ready_at = "ready", t
        snapshot = self.sim.engines[index].snapshot(t)
        for router in self.sim.routers:  # the endpoint appears with its first scrape
            router.states[index] = snapshot
        self._record(t)
        self._release(t)

    # --- the poll -----------------------------------------------------------------------------------------------
    def poll(self, t: float) -> None:
        """Read the signals, ask the policy, start or stop replicas."""
        signals = self.signals(t)
        o = self.options
        want = min(max(o.policy.desired(signals), o.min_replicas), o.max_replicas)
        self.decisions += 1
        current = signals.replicas
        if want > current:
            for _ in range(want - current):
                self._start(t)
        elif want < current:
            self._stop(current - want, t)
        self._record(t, want)

    def signals(self, t: float) -> RouterSignals:
        ready = self.schedulable()
        if self._prompt_n:
            self._last_prompt = max(self._prompt_sum // self._prompt_n, 1)
        self._prompt_sum = self._prompt_n = 0
        return RouterSignals(
            t=t, replicas=self.count("ready") + self.count("starting"), ready=len(ready),
            queue_depth=self.gate.depth() if self.gate is not None else {},
            ttft_headroom_s=self._headroom(ready, self._last_prompt),
            kv_usage=sum(e.metrics.kv_usage for e in ready) / len(ready) if ready else 0.0,
            slo_miss_ratio=self._miss_ratio(t))

    def _miss_ratio(self, t: float) -> float | None:
        """Share of the requests answered in the last window that missed a target (None: fewer than 20)."""
        window = self.options.miss_window_s or 4 * self.options.poll_s
        answered = self._answered
        while answered and answered[0][0] < t - window:
            answered.popleft()
        return sum(m for _, m in answered) / len(answered) if len(answered) >= 20 else None

    def _headroom(self, ready: list[EndpointState], prompt_tokens: int) -> float | None:
        """``llmd_router_ttft_headroom_seconds``: the target minus the best endpoint's predicted TTFT for an
        uncached prompt of ``prompt_tokens`` (the router's producers and the admitter's TTFT model)."""
        if not ready:
            return None
        base = 1 << 24  # token ids no engine holds: an uncached prompt
        llm = LLMRequest(request_id="autoscale-probe", model=self.sim.options.model, body={},
                         token_ids=tuple(range(base, base + prompt_tokens)), max_tokens=1)
        state = CycleState(llm, ready)
        for producer in self.sim.scheduler.producers:
            producer.produce(state)
        return self.options.ttft_target_s - min(self._ttft(state, e) for e in ready)

    def _start(self, t: float) -> None:
        from llmd_kserve.cluster_sim.events import ReplicaReady

        sim = self.sim
        i = len(sim.engines)
        eng = self._new_replica(i)
        sim.engines.append(eng)
        sim.frontends.append(Frontend(sim.profile))
        for router in sim.routers:
            router.add_engine(eng)
        sim.index_of[eng.id] = i
        self.lives.append(ReplicaLife(i, t))
        sim.push(t + self.options.startup_s, ReplicaReady(i))

    def _stop(self, n: int, t: float) -> None:
        starting = [life for life in self.lives if life.phase == "starting"]
        for life in reversed(starting[-n:] if n <= len(starting) else starting):
            self._remove(life, t)
            n -= 1
        ready = sorted((life for life in self.lives if life.phase == "ready"), key=lambda x: self.assigned[x.index])
        for life in ready[:n]:
            life.phase, life.drain_at = "draining", t
            if self.assigned[life.index] <= 0:
                self._remove(life, t)

    def _remove(self, life: ReplicaLife, t: float) -> None:
        life.phase, life.removed_at = "removed", t
        eng = self.sim.engines[life.index]
        for router in self.sim.routers:
            router.remove_engine(life.index, eng.id)
        self._record(t)

    def _record(self, t: float, desired: int | None = None) -> None:
        ready, starting, draining = self.count("ready"), self.count("starting"), self.count("draining")
        self.curve.points.append((t, ready, starting, draining, ready + starting if desired is None else desired))

    # --- the outcome --------------------------------------------------------------------------------------------
    def report(self, end: float) -> dict[str, Any]:
        """GPU-hours, the replica curve and each replica's life, as JSON-ready values (times in seconds)."""
        seconds = sum(life.seconds(end) for life in self.lives)
        peak = max((p[1] + p[2] + p[3] for p in self.curve.points), default=self.options.initial)
        return {
            "policy": self.options.policy.name, "gpu_hours": seconds / 3600, "replica_seconds": seconds,
            "min_replicas": self.options.min_replicas, "max_replicas": self.options.max_replicas,
            "startup_s": self.options.startup_s, "poll_s": self.options.poll_s, "polls": self.decisions,
            "starts": sum(life.asked_at > 0 for life in self.lives), "peak_replicas": peak,
            "mean_ready": _mean_ready(self.curve.points, end),
            "curve": [{"t": p[0], "ready": p[1], "starting": p[2], "draining": p[3], "desired": p[4]}
                      for p in self.curve.points],
            "replicas": [{"id": str(self.sim.engines[life.index].id), "asked_at": life.asked_at,
                          "ready_at": life.ready_at, "drain_at": life.drain_at, "removed_at": life.removed_at}
                         for life in self.lives],
        }


def _mean_ready(points: list[tuple[float, int, int, int, int]], end: float) -> float:
    """Time-weighted mean of ready replicas over [0, end]."""
    if not points or end <= 0:
        return math.nan
    total = 0.0
    for (t0, ready, *_), (t1, *_) in zip(points, [*points[1:], (end,)], strict=True):
        total += ready * max(min(t1, end) - t0, 0.0)
    return total / end
