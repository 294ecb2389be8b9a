"""Arrival times: Poisson, constant rate, closed loop (none) or the trace's own; ``make_workload``: requests + times."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import replace

from llmd_kserve.bench.workloads.generators import build_requests
from llmd_kserve.bench.workloads.specs import ArrivalSpec, RequestSpec, WorkloadSpec


def assign_arrivals(requests: Sequence[RequestSpec], arrival: ArrivalSpec, rng: random.Random) -> list[RequestSpec]:
    """Set ``arrival_s`` (seconds from the run's start): Poisson / constant gaps, None for closed loop."""
    if arrival.pattern == "trace":
        return list(requests)
    if arrival.pattern == "concurrency":
        return [replace(r, arrival_s=None) for r in requests]
    assert arrival.rate is not None
    t, out = 0.0, []
    for r in requests:
        out.append(replace(r, arrival_s=t))
        t += rng.expovariate(arrival.rate) if arrival.pattern == "poisson" else 1.0 / arrival.rate
    return out


def make_workload(spec: WorkloadSpec, arrival: ArrivalSpec, rng: random.Random,
                  num_requests: int | None = None) -> list[RequestSpec]:
    """``build_requests`` then ``assign_arrivals`` with the same generator."""
    return assign_arrivals(build_requests(spec, rng, num_requests), arrival, rng)
