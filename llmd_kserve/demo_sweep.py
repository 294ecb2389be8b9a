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

from llmd_kserve.bench.stats import SLO, summarize
from llmd_kserve.bench.workloads import ArrivalSpec, SharedPrefixSpec, make_workload
from llmd_kserve.cluster_sim.run import simulate
from llmd_kserve.cluster_sim.sim import SimOptions

FACTORS = (0.6, 1.0, 1.4, 1.8)
"""Offered rates of the sweep, as multiples of the demo's own rate."""
ATTAINMENT = 0.9


def max_rate_within_slo(attainment: dict[float, float], need: float = ATTAINMENT) -> float:
    """The highest rate up to which every swept rate meets ``need`` (0.0 when the lowest does not)."""
    best = 0.0
    for rate in sorted(attainment):
        if attainment[rate] < need:
            break
        best = rate
    return best


def sweep(workload: SharedPrefixSpec, engines: int, num_blocks: int | None, base_rate: float,
          policies: Sequence[str], *, num_requests: int, slo: SLO, seed: int = 0,
          factors: Sequence[float] = FACTORS) -> list[dict[str, Any]]:
    """Per policy: ``{"policy", "points": [{rate, ttft_p90, slo_attainment, hit}], "max_rate_in_slo"}``."""
    out = []
    for policy in policies:
        points = []
        for f in factors:
            rate = round(base_rate * f, 1)
            arrival = ArrivalSpec(pattern="poisson", rate=rate)
            reqs = make_workload(workload, arrival, random.Random(seed), num_requests)
            run = simulate(reqs, policy, SimOptions(engines=engines, num_blocks=num_blocks, seed=seed), arrival)
            s = summarize(run.results, run.wall_s, slo, engine_hit_rate=run.engine_hit_rate)
            points.append({"rate": rate, "ttft_p90": s["ttft_p90"], "slo_attainment": s["slo_attainment"] or 0.0,
                           "hit": run.engine_hit_rate})
        out.append({"policy": policy, "points": points,
                    "max_rate_in_slo": max_rate_within_slo({p["rate"]: p["slo_attainment"] for p in points})})
    return out
