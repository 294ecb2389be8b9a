"""Simulator vs live stack: the same requests replayed in the cluster simulator and through real processes over HTTP.

Usage: PYTHONPATH=. .venv/bin/python benchmarks/sim_vs_live.py [--repeats 3] [--configs default,round-robin]
2 engines x 2,048 blocks, 8 groups of 2,500-token prefixes + 2,000-token questions, 32 output tokens, 100 requests at
Poisson 8 req/s. Prints TTFT p50 and hit rate of both per repeat and the spread of the TTFT difference over repeats.
The live TTFT depends on the machine's load, so this is a benchmark (numbers in benchmarks/RESULTS.md), not a test;
``tests/cluster_sim/test_agreement.py`` checks what does not depend on load (counts, errors, hit rates, ordering).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import urllib.request
from typing import Any

from llmd_kserve.bench.loadgen import LoadConfig, run_load
from llmd_kserve.bench.stats import summarize
from llmd_kserve.bench.workloads import ArrivalSpec, SharedPrefixSpec, make_workload
from llmd_kserve.cluster_sim import SimOptions, simulate
from llmd_kserve.stack import LocalStack

ENGINES, BLOCKS = 2, 2048
SPEC = SharedPrefixSpec(num_groups=8, prompts_per_group=13, system_prompt_len=2500, question_len=2000, output_len=32)
ARRIVAL = ArrivalSpec(pattern="poisson", rate=8.0)
CONFIGS = ("default", "round-robin")


def _post(url: str) -> None:
    with urllib.request.urlopen(urllib.request.Request(url, method="POST"), timeout=10) as resp:
        resp.read()


def live_runs(reqs: list[Any], configs: tuple[str, ...] = CONFIGS) -> dict[str, dict[str, Any]]:
    """Summaries of ``reqs`` through a LocalStack per config: one warm-up, then each config on cold caches."""
    live: dict[str, dict[str, Any]] = {}
    with LocalStack(engines=ENGINES, config=configs[0], prometheus=False,
                    engine_args=("--num-blocks", str(BLOCKS))) as stack:
        warm = ArrivalSpec(pattern="concurrency", concurrency=2)
        asyncio.run(run_load(make_workload(SPEC, warm, random.Random(99), 8), warm,
                             LoadConfig(target=stack.router_url, progress=False), run_tag="warmup-"))
        for i, config in enumerate(configs):
            if i:
                stack.restart_router(config)
            for url in stack.engine_base_urls:  # cold caches, as in the simulator
                _post(f"{url}/reset_prefix_cache")
            run = asyncio.run(run_load(reqs, ARRIVAL, LoadConfig(target=stack.router_url, progress=False),
                                       run_tag=f"{config}-"))
            live[config] = run.summary()
    return live


def sim_runs(reqs: list[Any], configs: tuple[str, ...] = CONFIGS) -> dict[str, dict[str, Any]]:
    out = {}
    for config in configs:
        run = simulate(reqs, config, SimOptions(engines=ENGINES, num_blocks=BLOCKS))
        out[config] = summarize(run.results, run.wall_s)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--configs", default=",".join(CONFIGS))
    a = ap.parse_args()
    configs = tuple(a.configs.split(","))
    reqs = make_workload(SPEC, ARRIVAL, random.Random(0), 100)
    sim = sim_runs(reqs, configs)
    diffs: dict[str, list[float]] = {c: [] for c in configs}
    for rep in range(a.repeats):
        live = live_runs(reqs, configs)
        for c in configs:
            s, lv = sim[c], live[c]
            diff = (s["ttft_p50"] - lv["ttft_p50"]) / lv["ttft_p50"]
            diffs[c].append(diff)
            print(f"run {rep + 1} {c:12s} TTFT p50 sim {s['ttft_p50'] * 1e3:.1f} ms / live {lv['ttft_p50'] * 1e3:.1f} ms"
                  f" ({diff:+.0%}), hit rate sim {s['cache_hit_rate']:.3f} / live {lv['cache_hit_rate']:.3f}, "
                  f"errors {lv['errors']}", flush=True)
    for c in configs:
        print(f"{c:12s} TTFT p50 sim-vs-live difference over {a.repeats} runs: "
              f"{min(diffs[c]):+.0%} .. {max(diffs[c]):+.0%}")


if __name__ == "__main__":
    main()
