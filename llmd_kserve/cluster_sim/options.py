"""What a simulated cluster is (engines, roles, latencies of the router's view) and what one run of it returns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from llmd_kserve.bench.stats import RequestResult
from llmd_kserve.cluster_sim.routers import BALANCERS, BalancerPolicy
from llmd_kserve.defaults import DEFAULT_MODEL, DEFAULT_PROFILE, SCRAPE_INTERVAL_S
from llmd_kserve.latency import LatencyProfile
from llmd_kserve.types import Role

if TYPE_CHECKING:
    from llmd_kserve.cluster_sim.autoscale import AutoscaleOptions


@dataclass(frozen=True, slots=True)
class SimOptions:
    """The simulated cluster: engine count, roles and shape, and the latencies of the router's view of it."""

    engines: int = 8
    roles: tuple[Role, ...] | None = None
    """One role per engine (``cluster_sim.pd_roles(prefill, decode)``); when set, ``engines`` is its length.
    None: ``engines`` aggregated (``both``) replicas."""
    profile: str | LatencyProfile = DEFAULT_PROFILE
    engine_profiles: tuple[str | LatencyProfile, ...] | None = None
    """One latency profile per engine (mixed GPUs: unequal speed and, with ``num_blocks`` None, unequal KV
    capacity); None: every engine runs ``profile``. With ``label_profiles``, an engine whose profile is given by name
    carries that name in its ``PROFILE_LABEL`` label, so the router's latency model times it with its own profile;
    otherwise the router times every engine with ``profile``."""
    label_profiles: bool = True
    """Tell the router each engine's profile (the endpoint label) when ``engine_profiles`` names them."""
    num_blocks: int | None = None
    """KV blocks per engine (None: the profile's ``num_gpu_blocks``)."""
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    accelerators: tuple[int, ...] | None = None
    """Accelerator index of each engine: engines with the same index time-share one GPU (processor sharing, see
    ``cluster_sim.accelerator``), like several vLLM servers on one GPU. None: one accelerator per engine."""
    scrape_interval: float = SCRAPE_INTERVAL_S
    """Seconds between metrics snapshots (the live scraper's default poll)."""
    kv_event_delay: float = 0.001
    """Seconds from a step's end until its KV events are in the router's index."""
    router_delay: float = 0.001
    """Seconds the router hop adds before the engine sees a request or a P/D leg (parse, schedule, connect)."""
    frontend_overhead: bool = True
    """Add the profile's per-request front-end latency (vLLM's HTTP + tokenization) before the engine queue."""
    kv_link_gbps: float | None = None
    """P/D KV transfer bandwidth in GB/s (None: the profile's ``kv_link_gbps``)."""
    prefill_timeout_s: float | None = 30.0
    """P/D: a prefill leg not finished this long after the router sent it falls back to a local prefill (None: never),
    like the orchestrator's ``prefill_timeout_s``."""
    routers: int = 1
    """Router replicas (active-active), each with its own scheduler state, KV index and scrapes
    (``cluster_sim.routers``); 1: the single router."""
    balancer: BalancerPolicy = "round-robin"
    """How requests are spread over the router replicas: ``round-robin``, ``random``, or ``prefix-hash`` (each
    replica owns a slice of the prefixes: hash of the request's group, session or leading prompt text)."""
    router_kv_event_delays: tuple[float, ...] | None = None
    """Per router replica: seconds from a step's end until its KV events are in that replica's index (None: every
    replica ``kv_event_delay``)."""
    shared_load_delay: float | None = None
    """With several routers: seconds until one replica's in-flight charges reach the others (a shared store,
    ``cluster_sim.shared_load``); None: each replica sees only its own requests (and the engines' scrapes)."""
    shared_plugins: tuple[str, ...] = ("inflight-load-producer",)
    """Plugin types whose decision bookkeeping the shared view carries (with ``shared_load_delay``): the load
    producer by default; add ``approx-prefix-cache-producer`` (llm-d's approximate prefix index) or
    ``precise-prefix-producer`` (its speculative entries) to share what the replicas' prefix producers learn from
    their own decisions."""
    model: str = DEFAULT_MODEL
    seed: int = 0
    autoscale: AutoscaleOptions | None = None
    """Replicas that start and stop during the run under a scaling policy (``cluster_sim.autoscale``); the cluster
    starts with its ``initial`` replicas and ``engines`` is ignored. Aggregated replicas of ``profile`` only."""

    def __post_init__(self) -> None:
        if self.roles is not None:
            object.__setattr__(self, "roles", tuple(self.roles))
            object.__setattr__(self, "engines", len(self.roles))
        if self.engine_profiles is not None:
            object.__setattr__(self, "engine_profiles", tuple(self.engine_profiles))
            if len(self.engine_profiles) != self.engines:
                raise ValueError(f"engine_profiles names {len(self.engine_profiles)} engines, the cluster has {self.engines}")
        if self.routers < 1:
            raise ValueError(f"routers must be >= 1, got {self.routers}")
        if self.balancer not in BALANCERS:
            raise ValueError(f"balancer must be one of {', '.join(BALANCERS)}, got {self.balancer!r}")
        if self.router_kv_event_delays is not None:
            object.__setattr__(self, "router_kv_event_delays", tuple(self.router_kv_event_delays))
            if len(self.router_kv_event_delays) != self.routers:
                raise ValueError(f"router_kv_event_delays names {len(self.router_kv_event_delays)} routers, "
                                 f"the cluster has {self.routers}")
        if self.shared_load_delay is not None and self.shared_load_delay < 0:
            raise ValueError(f"shared_load_delay must be >= 0, got {self.shared_load_delay}")
        if self.accelerators is not None:
            object.__setattr__(self, "accelerators", tuple(self.accelerators))
            if len(self.accelerators) != self.engines:
                raise ValueError(f"accelerators names {len(self.accelerators)} engines, the cluster has {self.engines}")

    @property
    def engine_roles(self) -> tuple[Role, ...]:
        if self.roles is not None:
            return self.roles
        both: Role = "both"
        return (both,) * self.engines


@dataclass(frozen=True, slots=True)
class SimRun:
    """One simulated run: per-request results (arrival order), its length, and engine-side counters."""

    results: list[RequestResult]
    wall_s: float
    engine_hit_rate: float | None
    engine_counters: dict[str, float]
    """Summed engine counters; with P/D roles also ``disaggregated``, ``kv_transfer_s``, ``pd_fallbacks``."""
    events: int
    """Events processed (arrivals, deliveries, steps, scrapes, P/D legs and timeouts)."""
    autoscale: dict[str, Any] | None = None
    """With ``SimOptions.autoscale``: GPU-hours, the replica curve and every replica's life (``Autoscaler.report``)."""
