"""The simulated cluster's replicas: one engine core per endpoint, with its role, KV-event lag and metrics snapshot."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from llmd_kserve.engine_sim.core import EngineCore, StepOutput
from llmd_kserve.latency import LatencyProfile
from llmd_kserve.types import Endpoint, EndpointId, EndpointMetrics, EndpointState, Role


def pd_roles(prefill: int = 0, decode: int = 0, both: int = 0) -> tuple[Role, ...]:
    """Engine roles of a cluster with ``prefill`` prefill, ``decode`` decode and ``both`` aggregated replicas."""
    return _times("prefill", prefill) + _times("decode", decode) + _times("both", both)


def _times(role: Role, n: int) -> tuple[Role, ...]:
    return (role,) * n


def engine_id(role: Role, i: int) -> EndpointId:
    """``http://sim-engine-<i>:8000`` for an aggregated replica, ``http://sim-<role>-<i>:8000`` otherwise."""
    return EndpointId(f"http://sim-{'engine' if role == 'both' else role}-{i}:8000")


class VirtualReplica:
    """One replica on the simulator's virtual clock: its endpoint (with role), its core, the step in progress, its
    snapshot before the first scrape. (The same ``EngineCore`` served over HTTP on the real clock is
    ``engine_sim.server.EngineServer``.) Each router replica keeps its own scrapes and KV events in flight
    (``cluster_sim.routers``)."""

    __slots__ = ("id", "endpoint", "core", "out", "state")

    def __init__(self, eid: EndpointId, role: Role, core: EngineCore, labels: Mapping[str, str] | None = None) -> None:
        self.id = eid
        self.endpoint = Endpoint(eid, role, None, labels=dict(labels or {}))
        self.core = core
        self.out: StepOutput | None = None  # the step in progress (None: idle)
        self.state = EndpointState(self.endpoint, EndpointMetrics(block_size=core.block_size,
                                                                  num_gpu_blocks=core.num_blocks, stale=False))

    def snapshot(self, t: float) -> EndpointState:
        """The core's counters now, as a metrics snapshot (what the live scraper reads off /metrics)."""
        core = self.core
        st = core.stats
        return EndpointState(self.endpoint, EndpointMetrics(
            waiting=core.num_waiting, running=core.num_running, kv_usage=core.kv_usage,
            block_size=core.block_size, num_gpu_blocks=core.num_blocks,
            prefix_queries=float(st.prefix_queries), prefix_hits=float(st.prefix_hits),
            scraped_at=t, stale=False))


def build_engines(profile: LatencyProfile | Sequence[LatencyProfile], roles: Sequence[Role], *,
                  num_blocks: int | None, max_num_seqs: int | None, max_num_batched_tokens: int | None, seed: int,
                  enable_kv_events: bool, labels: Sequence[Mapping[str, str]] | None = None) -> list[VirtualReplica]:
    """Fresh engines, one per role (and per profile when given a sequence); engine ``i`` gets core seed ``seed + i``
    and the endpoint labels ``labels[i]`` (when given)."""
    profiles = [profile] * len(roles) if isinstance(profile, LatencyProfile) else list(profile)
    return [VirtualReplica(engine_id(role, i), role,
                      EngineCore(profiles[i], num_blocks=num_blocks, max_num_seqs=max_num_seqs,
                                 max_num_batched_tokens=max_num_batched_tokens, seed=seed + i,
                                 enable_kv_events=enable_kv_events), labels[i] if labels else None)
            for i, role in enumerate(roles)]


def engine_counters(engines: Sequence[VirtualReplica]) -> tuple[float | None, dict[str, float]]:
    """(engine-side prefix hit rate, summed counters) over ``engines``."""
    q = sum(e.core.stats.prefix_queries for e in engines)
    h = sum(e.core.stats.prefix_hits for e in engines)
    counters = {"prefix_cache_queries": float(q), "prefix_cache_hits": float(h),
                "preemptions": float(sum(e.core.stats.num_preemptions for e in engines)),
                "steps": float(sum(e.core.stats.num_steps for e in engines)),
                "busy_s": sum(e.core.stats.busy_time for e in engines)}
    return (h / q if q else None), counters
