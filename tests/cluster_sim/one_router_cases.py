"""Runs whose exact results with one router are recorded (``data/one_router_golden.json``): the simulator with
``routers=1`` must reproduce them bit for bit. ``python -m tests.cluster_sim.one_router_cases`` rewrites the record
(only when the simulator's behaviour is meant to change)."""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import replace
from pathlib import Path
from typing import Any

from llmd_kserve.bench.sim_configs import sim_config
from llmd_kserve.bench.workloads import ArrivalSpec, RagSpec, SharedPrefixSpec, make_workload
from llmd_kserve.cluster_sim import ClusterSim, SimOptions, SimRun, pd_roles
from llmd_kserve.types import Objective

GOLDEN = Path(__file__).parent / "data" / "one_router_golden.json"
SPEC = SharedPrefixSpec(num_groups=12, prompts_per_group=10, system_prompt_len=2000, question_len=64, output_len=16,
                        zipf_s=1.1)


def _shared(rate: float, seed: int = 0) -> list[Any]:
    return make_workload(SPEC, ArrivalSpec(pattern="poisson", rate=rate), random.Random(seed))


def _with_objectives(reqs: list[Any]) -> list[Any]:
    return [replace(r, objective=Objective(-1 if i % 2 else 0, ttft_s=0.2)) for i, r in enumerate(reqs)]


def cases() -> dict[str, tuple[Any, SimOptions, list[Any]]]:
    """name -> (config, options, requests)."""
    pressure = SimOptions(engines=3, num_blocks=400, seed=1)
    rag = RagSpec(num_requests=30, num_documents=8, document_len=256, output_len=16)
    return {
        "default": ("default", pressure, _shared(60.0)),
        "llm-d-optimized-baseline": (sim_config("llm-d-optimized-baseline"), pressure, _shared(60.0)),
        "precise-prefix": ("precise-prefix", SimOptions(engines=4, seed=2), _shared(120.0, seed=3)),
        "round-robin": ("round-robin", SimOptions(engines=4), _shared(40.0)),
        "slo-burst": ("default", SimOptions(engines=2), _with_objectives(_shared(2000.0))),
        "pd": ("pd-predicted-ttft", SimOptions(roles=pd_roles(1, 2)),
               make_workload(rag, ArrivalSpec(pattern="poisson", rate=6.0), random.Random(5))),
    }


def fingerprint(run: SimRun) -> str:
    """A digest of every request's outcome and timing (exact floats), the run's length, counters and event count."""
    rows = [(r.request_id, r.ok, r.status, r.endpoint, repr(r.ttft), repr(r.e2e), r.cached_tokens, r.output_tokens,
             r.extra.get("predicted_cached_tokens")) for r in run.results]
    blob = json.dumps([rows, repr(run.wall_s), sorted((k, repr(v)) for k, v in run.engine_counters.items()),
                       run.events])
    return hashlib.sha256(blob.encode()).hexdigest()


def run_case(name: str, **options: Any) -> SimRun:
    config, opts, reqs = cases()[name]
    return ClusterSim(config, replace(opts, **options)).run(reqs)


if __name__ == "__main__":
    GOLDEN.write_text(json.dumps({name: fingerprint(run_case(name)) for name in cases()}, indent=1) + "\n")
    print(GOLDEN.read_text())
