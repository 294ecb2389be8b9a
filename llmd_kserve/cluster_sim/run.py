"""Simulated benchmark runs in the bench JSON schema (what ``llmd-kserve bench --sim`` and the demo call)."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from llmd_kserve.bench.report import run_entry
from llmd_kserve.bench.sim_configs import sim_config
from llmd_kserve.bench.stats import SLO, result_to_dict, summarize
from llmd_kserve.bench.workloads import ArrivalSpec, RequestSpec, WorkloadSpec, assign_arrivals, build_requests
from llmd_kserve.cluster_sim.autoscale import autoscale_options
from llmd_kserve.cluster_sim.options import SimOptions, SimRun
from llmd_kserve.cluster_sim.routers import BalancerPolicy
from llmd_kserve.cluster_sim.sim import ClusterSim
from llmd_kserve.config.schema import SchedulerConfig
from llmd_kserve.defaults import DEFAULT_PROFILE
from llmd_kserve.types import Role

log = logging.getLogger(__name__)


def simulate(requests: Sequence[RequestSpec], config: str | Path | SchedulerConfig,
             options: SimOptions | None = None, arrival: ArrivalSpec | None = None,
             progress: Callable[[int, int], None] | None = None) -> SimRun:
    """One run of ``requests`` (arrival times already assigned) under ``config`` on a fresh simulated cluster."""
    concurrency = arrival.concurrency if arrival is not None and arrival.pattern == "concurrency" else None
    return ClusterSim(config, options).run(requests, concurrency=concurrency, progress=progress)


def sim_entry(run: SimRun, policy: str, slo: SLO | None = None, **extra: Any) -> dict[str, Any]:
    """A ``runs[]`` item (bench JSON schema) from a simulated run."""
    summary = summarize(run.results, run.wall_s, slo, engine_hit_rate=run.engine_hit_rate)
    if run.autoscale is not None:
        extra["autoscale"] = run.autoscale
    return run_entry(policy, summary, [result_to_dict(r) for r in run.results], engine_counters=run.engine_counters,
                     **extra)


def run_bench(*, workload: WorkloadSpec, arrivals: Sequence[ArrivalSpec], num_requests: int | None = None,
              seed: int = 0, slo: SLO | None = None, engines: int = 8,
              config: str | Path | SchedulerConfig = "default",
              policy_label: str | None = None, options: SimOptions | None = None,
              roles: Sequence[Role] | None = None,
              progress: Callable[[str, int, int], None] | None = None,
              profile: str = DEFAULT_PROFILE, routers: int = 1, balancer: BalancerPolicy = "round-robin",
              shared_load_delay: float | None = None, autoscale: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """One simulated run per arrival spec, requests built exactly as the live bench builds them (same seeds);
    ``roles`` (one per engine, e.g. ``pd_roles(2, 2)``) makes a P/D cluster instead of ``engines`` aggregated ones.
    ``progress(label, done, total)`` hears how far each run is; ``profile`` is the engines' latency profile (a
    built-in name or a file; ignored when ``options`` are given). ``routers``, ``balancer``, ``shared_load_delay``:
    router replicas in front of the engines (``SimOptions``; ignored when ``options`` are given).
    ``llm-d-optimized-baseline`` runs with the
    simulated H100's measured peak prefill throughput, as in every simulated comparison (``sim_config``).
    ``autoscale`` (the keyword arguments of :func:`~llmd_kserve.cluster_sim.autoscale.autoscale_options`, e.g.
    ``{"policy": "headroom", "max_replicas": 12}``) makes replicas start and stop under that policy, starting
    from ``engines``."""
    scaling = None if autoscale is None else autoscale_options(**{"initial_replicas": engines, **autoscale})
    opts = options or SimOptions(engines=engines, roles=tuple(roles) if roles else None, seed=seed, profile=profile,
                                 routers=routers, balancer=balancer, shared_load_delay=shared_load_delay,
                                 autoscale=scaling)
    label = policy_label or str(config)
    config = sim_config(config) if isinstance(config, str | Path) else config
    runs = []
    for i, arrival in enumerate(arrivals):
        rng = random.Random(seed + i)  # as bench.runner does for live runs: same prompts, same arrival times
        requests = assign_arrivals(build_requests(workload, rng, num_requests), arrival, rng)
        t0 = time.perf_counter()
        tick = None if progress is None else partial(progress, f"simulating {label} {arrival.label}")
        run = simulate(requests, config, opts, arrival, tick)
        took = time.perf_counter() - t0
        log.info("simulated %d requests on %d engines (%s) in %.1fs", len(requests), opts.engines, label, took)
        runs.append(sim_entry(run, label, slo, scale="sim", arrival=arrival.label, engines=opts.engines,
                              sim_seconds=round(took, 3), **({"routers": opts.routers} if opts.routers > 1 else {})))
    return runs
