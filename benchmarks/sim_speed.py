"""Cluster simulator speed: 10,000 shared-prefix requests on 8 simulated H100 engines, wall time per config.

Usage: .venv/bin/python benchmarks/sim_speed.py [--num-requests 10000] [--engines 8] [--rate 50]
       [--configs default,round-robin]
Target: <= 30 s per run on the 2-core sandbox (workload generation + simulation + summary).
"""

from __future__ import annotations

import argparse
import random
import time

from llmd_kserve.bench.stats import SLO, summarize
from llmd_kserve.bench.workloads import ArrivalSpec, SharedPrefixSpec, make_workload
from llmd_kserve.cluster_sim import SimOptions, simulate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--num-requests", type=int, default=10_000)
    ap.add_argument("--engines", type=int, default=8)
    ap.add_argument("--rate", type=float, default=50.0)
    ap.add_argument("--configs", default="default,round-robin")
    a = ap.parse_args()
    spec = SharedPrefixSpec(num_groups=192, prompts_per_group=-(-a.num_requests // 192), system_prompt_len=6000,
                            question_len=200, output_len=128)
    for cfg in a.configs.split(","):
        t0 = time.perf_counter()
        reqs = make_workload(spec, ArrivalSpec(pattern="poisson", rate=a.rate), random.Random(0), a.num_requests)
        t1 = time.perf_counter()
        run = simulate(reqs, cfg, SimOptions(engines=a.engines))
        t2 = time.perf_counter()
        s = summarize(run.results, run.wall_s, SLO(0.5, 0.05))
        t3 = time.perf_counter()
        tokens = sum(r.output_tokens for r in run.results)
        print(f"{cfg:12s} {s['n']} requests, {a.engines} engines, {run.wall_s:.0f} s virtual, "
              f"{int(run.engine_counters['steps'])} engine steps, {tokens} output tokens, {run.events} events: "
              f"workload {t1 - t0:.1f}s + simulate {t2 - t1:.1f}s + summarize {t3 - t2:.1f}s = {t3 - t0:.1f}s wall",
              flush=True)


if __name__ == "__main__":
    main()
