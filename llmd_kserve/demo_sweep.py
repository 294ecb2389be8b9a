"""The demo's rate sweep: each policy's highest offered rate within the SLO, in the cluster simulator.

One overload point says little (issue 15): a policy can look 45x better just past the baseline's saturation and
equal everywhere else. The sweep runs the demo's simulated scale at a few offered rates (fractions and multiples
of the demo's rate, fewer requests per run) and reports, per policy, TTFT p90 and SLO attainment at every rate
and the max rate within the SLO (the highest swept rate up to which >= 90% of requests meet it).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from llmd_kserve.bench.frontier import ATTAIN, max_rate_within_slo
from llmd_kserve.bench.sim_configs import sim_config
from llmd_kserve.bench.stats import SLO, summarize
from llmd_kserve.bench.workloads import ArrivalSpec, SharedPrefixSpec, make_workload
from llmd_kserve.cluster_sim.run import simulate
from llmd_kserve.cluster_sim.sim import SimOptions
from llmd_kserve.defaults import DEFAULT_PROFILE

FACTORS = (0.6, 1.0, 1.4, 1.8)
"""Offered rates of the sweep, as multiples of the demo's own rate."""
ATTAINMENT = ATTAIN
"""Share of requests a rate must keep within the SLO (the benchmarks' ``bench.frontier.ATTAIN``)."""

MATCHED_FRACTION = 0.8
"""The matched load: this fraction of the cache-blind baseline's max rate within the SLO."""
MATCHED_REQUESTS = 1500
"""Requests of a matched-load run: enough that each prefix group's cold first request is a small share (the
percentiles are the steady state's, not the cold-start boundary's)."""


def matched_rate(baseline_max_rates: Sequence[float], fraction: float = MATCHED_FRACTION,
                 floor: float = 0.0) -> float:
    """The rate at which policies are compared at equal load (issue 15's rule, shared by the demo and
    ``benchmarks/routing_scenarios.py``): ``fraction`` of the cache-blind baseline's max rate within the SLO (the
    lowest over repeats), so below its saturation by the same margin everywhere; ``floor * fraction`` when the
    baseline met the SLO at no swept rate (``floor``: the lowest swept rate)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    base = min(baseline_max_rates) if baseline_max_rates else 0.0
    return round(fraction * (base if base > 0 else floor), 2)


def matched_load(workload: SharedPrefixSpec, engines: int, num_blocks: int | None, rows: Sequence[dict[str, Any]],
                 policies: Sequence[str], *, num_requests: int = MATCHED_REQUESTS, slo: SLO, seed: int = 0,
                 baseline: str = "round-robin", profile: str = DEFAULT_PROFILE) -> dict[str, Any] | None:
    """Every policy at the matched rate (:func:`matched_rate` of ``baseline``'s max rate in ``rows``, a
    :func:`sweep`'s result), one long run each: ``{"rate", "requests", "points": {policy: {ttft_p50, ttft_p90,
    slo_attainment, hit}}}``; None when ``baseline`` was not swept."""
    base = next((r for r in rows if r["policy"] == baseline), None)
    if base is None:
        return None
    floor = min(p["rate"] for p in base["points"])
    rate = matched_rate([base["max_rate_in_slo"]], floor=floor)
    arrival = ArrivalSpec(pattern="poisson", rate=rate)
    reqs = make_workload(workload, arrival, random.Random(seed), num_requests)
    points = {}
    for policy in policies:
        run = simulate(reqs, sim_config(policy), SimOptions(engines=engines, num_blocks=num_blocks, seed=seed, profile=profile),
                       arrival)
        s = summarize(run.results, run.wall_s, slo, engine_hit_rate=run.engine_hit_rate)
        points[policy] = {"ttft_p50": s["ttft_p50"], "ttft_p90": s["ttft_p90"],
                          "slo_attainment": s["slo_attainment"] or 0.0, "hit": run.engine_hit_rate}
    return {"rate": rate, "requests": len(reqs), "points": points}


def sweep(workload: SharedPrefixSpec, engines: int, num_blocks: int | None, base_rate: float,
          policies: Sequence[str], *, num_requests: int, slo: SLO, seed: int = 0,
          factors: Sequence[float] = FACTORS, profile: str = DEFAULT_PROFILE) -> list[dict[str, Any]]:
    """Per policy: ``{"policy", "points": [{rate, ttft_p90, slo_attainment, hit}], "max_rate_in_slo"}``."""
    out = []
    for policy in policies:
        points = []
        for f in factors:
            rate = round(base_rate * f, 1)
            arrival = ArrivalSpec(pattern="poisson", rate=rate)
            reqs = make_workload(workload, arrival, random.Random(seed), num_requests)
            run = simulate(reqs, sim_config(policy), SimOptions(engines=engines, num_blocks=num_blocks, seed=seed,
                                                    profile=profile), arrival)
            s = summarize(run.results, run.wall_s, slo, engine_hit_rate=run.engine_hit_rate)
            points.append({"rate": rate, "ttft_p90": s["ttft_p90"], "slo_attainment": s["slo_attainment"] or 0.0,
                           "hit": run.engine_hit_rate})
        out.append({"policy": policy, "points": points,
                    "max_rate_in_slo": max_rate_within_slo({p["rate"]: p["slo_attainment"] for p in points})})
    return out
