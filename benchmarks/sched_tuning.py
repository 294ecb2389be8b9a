"""Scheduler tuning in the cluster simulator: load balance and herding of the shipped configs, side by side.

Usage: .venv/bin/python benchmarks/sched_tuning.py [--scenarios demo,mixed,cold] [--configs round-robin,load-only,...]
       [--num-requests N]

Scenarios (8 engines, profile h100-llama8b, SLO TTFT <= 0.5 s, TPOT <= 50 ms):

* ``demo``  - the demo's simulated workload: shared-prefix, 192 groups x 6,000-token system prompt + 200-token question,
  128 output tokens, Poisson 55 req/s, full KV cache (26,962 blocks per engine).
* ``demo45`` - the same at 45 req/s, below round-robin's saturation (~50 req/s).
* ``mixed`` - uneven, cache-blind load: RAG-like requests (4-7 x 1,024-token documents, 64 output) interleaved with
  reasoning-like ones (64-256-token prompts, 1,000-2,000 output), Poisson 45 req/s.
* ``cold``  - cold-prefix bursts: shared-prefix with 64 groups x 4,000-token prefixes whose first requests arrive
  together (constant 400 req/s for the first 64 requests, one per group, then Poisson 40 req/s).

Per run: TTFT p50/p90, TPOT p50, goodput, cache hit rate, requests per engine (min-max) and *herding*: the most
requests one engine received within one 50 ms scrape interval, and the longest streak of consecutive arrivals
sent to the same engine.
"""

from __future__ import annotations

import argparse
import random
import time
from collections import Counter
from dataclasses import replace

from llmd_kserve.bench.stats import SLO, summarize
from llmd_kserve.bench.workloads import (
    ArrivalSpec,
    RagSpec,
    ReasoningSpec,
    RequestSpec,
    SharedPrefixSpec,
    assign_arrivals,
    build_requests,
    make_workload,
)
from llmd_kserve.cluster_sim import SimOptions, simulate

SLO_ = SLO(ttft=0.5, tpot=0.05)
CONFIGS = "round-robin,random,load-only,approx-prefix,precise-prefix,default"


def demo(n: int, rate: float = 55.0) -> list[RequestSpec]:
    spec = SharedPrefixSpec(num_groups=192, prompts_per_group=-(-n // 192), system_prompt_len=6000,
                            question_len=200, output_len=128)
    return make_workload(spec, ArrivalSpec(pattern="poisson", rate=rate), random.Random(0), n)


def mixed(n: int) -> list[RequestSpec]:
    rng = random.Random(0)
    rag = build_requests(RagSpec(num_requests=n, num_documents=256, docs_min=4, docs_max=7, output_len=64), rng)
    reason = build_requests(ReasoningSpec(num_requests=n), rng)
    reqs = [rag[i] if rng.random() < 0.5 else reason[i] for i in range(n)]
    reqs = [replace(r, request_id=f"mixed-{i}") for i, r in enumerate(reqs)]
    return assign_arrivals(reqs, ArrivalSpec(pattern="poisson", rate=45.0), rng)


def cold(n: int) -> list[RequestSpec]:
    groups = 64
    spec = SharedPrefixSpec(num_groups=groups, prompts_per_group=-(-n // groups), system_prompt_len=4000,
                            question_len=200, output_len=128)
    rng = random.Random(0)
    reqs = build_requests(spec, rng, n)
    first: dict[str | None, RequestSpec] = {}
    for r in reqs:
        first.setdefault(r.group, r)
    heads = list(first.values())
    rest = [r for r in reqs if first.get(r.group) is not r]
    burst = assign_arrivals(heads, ArrivalSpec(pattern="constant", rate=400.0), rng)
    t0 = burst[-1].arrival_s or 0.0
    tail = assign_arrivals(rest, ArrivalSpec(pattern="poisson", rate=40.0), rng)
    return burst + [replace(r, arrival_s=(r.arrival_s or 0.0) + t0) for r in tail]


SCENARIOS = {"demo": (demo, 4000), "demo45": (lambda n: demo(n, 45.0), 4000), "mixed": (mixed, 2000), "cold": (cold, 2000)}


def herding(results, window: float = 0.05) -> tuple[int, int]:  # noqa: ANN001
    """(most requests to one engine within one scrape window, longest same-engine streak of arrivals)."""
    rs = sorted((r for r in results if r.endpoint), key=lambda r: r.start)
    per_window = Counter((int(r.start / window), r.endpoint) for r in rs)
    streak = best = 0
    prev = None
    for r in rs:
        streak = streak + 1 if r.endpoint == prev else 1
        prev = r.endpoint
        best = max(best, streak)
    return max(per_window.values(), default=0), best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenarios", default="demo,mixed,cold")
    ap.add_argument("--configs", default=CONFIGS)
    ap.add_argument("--num-requests", type=int, default=None)
    ap.add_argument("--engines", type=int, default=8)
    a = ap.parse_args()
    for name in a.scenarios.split(","):
        make, n = SCENARIOS[name]
        reqs = make(a.num_requests or n)
        print(f"## {name}: {len(reqs)} requests, {a.engines} engines", flush=True)
        for cfg in a.configs.split(","):
            t0 = time.perf_counter()
            run = simulate(reqs, cfg, SimOptions(engines=a.engines))
            s = summarize(run.results, run.wall_s, SLO_)
            counts = list(s["endpoints"].values())
            win, streak = herding(run.results)
            print(f"{name:6s} {cfg:15s} TTFT p50 {s['ttft_p50'] * 1e3:8.1f} p90 {s['ttft_p90'] * 1e3:8.1f} ms"
                  f"  TPOT p50 {s['tpot_p50'] * 1e3:5.1f} ms  goodput {s['goodput_rps']:5.1f}/s"
                  f"  hit {s['cache_hit_rate'] or 0:.2f}  per-engine {min(counts)}-{max(counts)}"
                  f"  max/50ms {win:2d}  streak {streak:3d}  (sim {time.perf_counter() - t0:.1f}s)", flush=True)


if __name__ == "__main__":
    main()
