"""A simulated run reports how far it is: finished requests, rising to the total, at most about a hundred times."""

from __future__ import annotations

import random

from llmd_kserve.bench.workloads import ArrivalSpec, SharedPrefixSpec, make_workload
from llmd_kserve.cluster_sim import SimOptions, run_bench, simulate


def test_progress_rises_to_the_total():
    spec = SharedPrefixSpec(num_groups=2, prompts_per_group=150, system_prompt_len=64, question_len=8, output_len=2)
    reqs = make_workload(spec, ArrivalSpec(rate=200), random.Random(0))
    seen: list[tuple[int, int]] = []
    run = simulate(reqs, "round-robin", SimOptions(engines=2), progress=lambda d, t: seen.append((d, t)))
    assert len(run.results) == 300 and seen[-1] == (300, 300)
    done = [d for d, _ in seen]
    assert done == sorted(done) and all(t == 300 for _, t in seen) and 3 <= len(seen) <= 101


def test_run_bench_labels_each_run():
    spec = SharedPrefixSpec(num_groups=1, prompts_per_group=6, system_prompt_len=32, question_len=8, output_len=2)
    calls: list[tuple[str, int, int]] = []
    run_bench(workload=spec, arrivals=[ArrivalSpec(rate=5), ArrivalSpec(rate=10)], engines=1, config="round-robin",
              progress=lambda *a: calls.append(a))
    assert {c[0] for c in calls} == {"simulating round-robin poisson@5/s", "simulating round-robin poisson@10/s"}
    assert calls[-1][1:] == (6, 6)
