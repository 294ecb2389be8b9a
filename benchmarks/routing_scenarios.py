"""Routing scenarios (issue 15) in the cluster simulator: every scenario x config, a rate sweep, several seeds.

For each (scenario, config, seed, rate) one virtual-time run of the same requests (same seed, same arrivals for
every config) on the scenario's cluster; reported per (scenario, config), as mean and spread (min..max) over seeds:
TTFT p50/p90 at the scenario's matched rate, the max rate within the SLO (highest swept rate up to which >= 90% of
requests meet TTFT and TPOT objectives), the engines' prefix-cache hit rate (their own counters, at the matched rate)
and the router's CPU seconds per 1,000 requests (process time inside ``Scheduler.schedule``, all rates).

Usage: .venv/bin/python benchmarks/routing_scenarios.py [--scenarios a,b] [--configs a,b] [--seeds 0,1]
       [--num-requests N (at least rate x the scenario's min_duration_s)]
       [--extra-rates 250,300] [--json out.json] [--markdown]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from dataclasses import replace
from typing import Any

from llmd_kserve.bench.scenarios import SCENARIOS, Scenario
from llmd_kserve.bench.stats import SLO, summarize
from llmd_kserve.cluster_sim import SimOptions
from llmd_kserve.cluster_sim.sim import ClusterSim
from llmd_kserve.latency import load_profile

CONFIGS = "round-robin,load-only,approx-prefix,precise-prefix,default"
ATTAIN = 0.9


def sim_options(sc: Scenario, seed: int) -> SimOptions:
    profile: Any = "h100-llama8b"
    if sc.max_model_len:
        profile = load_profile(profile).model_copy(update={"max_model_len": sc.max_model_len,
                                                           "name": f"h100-llama8b-{sc.max_model_len}"})
    return SimOptions(engines=sc.engines, profile=profile, engine_profiles=sc.engine_profiles,
                      num_blocks=sc.num_blocks, kv_event_delay=sc.kv_event_delay, seed=seed)


def one_run(sc: Scenario, config: str, seed: int, rate: float, n: int) -> dict[str, Any]:
    n = max(n, int(rate * sc.min_duration_s))  # long enough at every rate for queues to build (or not)
    reqs = sc.build(rate, random.Random(seed * 7919 + int(rate * 1000)), n)
    sim = ClusterSim(config, sim_options(sc, seed))
    inner = sim.scheduler.schedule
    cpu = [0.0]

    def timed(*args: Any, **kw: Any) -> Any:
        t0 = time.process_time()
        try:
            return inner(*args, **kw)
        finally:
            cpu[0] += time.process_time() - t0

    sim.scheduler.schedule = timed  # type: ignore[method-assign]
    run = sim.run(reqs)
    s = summarize(run.results, run.wall_s, SLO(sc.slo_ttft_s, sc.slo_tpot_s), engine_hit_rate=run.engine_hit_rate)
    return {"ttft_p50": s["ttft_p50"], "ttft_p90": s["ttft_p90"], "attain": s["slo_attainment"] or 0.0,
            "hit": run.engine_hit_rate, "cpu_s": cpu[0], "n": len(reqs)}


def max_rate(points: dict[float, float]) -> float:
    """The highest swept rate up to which every rate meets the attainment (0 if the lowest does not)."""
    best = 0.0
    for r in sorted(points):
        if points[r] < ATTAIN:
            break
        best = r
    return best


def spread(xs: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(xs), "min": min(xs), "max": max(xs)}


def evaluate(sc: Scenario, config: str, seeds: list[int], n: int) -> dict[str, Any]:
    per_seed: list[dict[str, Any]] = []
    for seed in seeds:
        runs = {r: one_run(sc, config, seed, r, n) for r in sorted(set(sc.rates) | {sc.matched_rate})}
        m = runs[sc.matched_rate]
        per_seed.append({"ttft_p50": m["ttft_p50"], "ttft_p90": m["ttft_p90"], "hit": m["hit"] or 0.0,
                         "max_rate": max_rate({r: x["attain"] for r, x in runs.items() if r in sc.rates}),
                         "cpu_per_1k": 1000 * sum(x["cpu_s"] for x in runs.values()) / sum(x["n"] for x in runs.values()),
                         "attain": {r: x["attain"] for r, x in runs.items()}})
    return {k: spread([p[k] for p in per_seed]) for k in ("ttft_p50", "ttft_p90", "hit", "max_rate", "cpu_per_1k")} | {
        "per_seed": per_seed}


def fmt(d: dict[str, float], scale: float = 1.0, digits: int = 0) -> str:
    return f"{d['mean'] * scale:.{digits}f} ({d['min'] * scale:.{digits}f}-{d['max'] * scale:.{digits}f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenarios", default=",".join(SCENARIOS))
    ap.add_argument("--configs", default=CONFIGS)
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--num-requests", type=int, default=None, help="default: each scenario's")
    ap.add_argument("--extra-rates", default="", help="rates (req/s) added to every scenario's sweep, e.g. 250,300")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    extra = tuple(float(r) for r in a.extra_rates.split(",") if r)
    seeds = [int(s) for s in a.seeds.split(",")]
    out: dict[str, Any] = {}
    print("| scenario | config | TTFT p50 ms | TTFT p90 ms | max rate in SLO (req/s) | hit rate | router CPU s/1k |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name in a.scenarios.split(","):
        sc = SCENARIOS[name]
        if extra:
            sc = replace(sc, rates=tuple(sorted(set(sc.rates) | set(extra))))
        for config in a.configs.split(","):
            t0 = time.perf_counter()
            r = out.setdefault(name, {})[config] = evaluate(sc, config, seeds, a.num_requests or sc.num_requests)
            print(f"| {name} @ {sc.matched_rate:g}/s | {config} | {fmt(r['ttft_p50'], 1e3)} | {fmt(r['ttft_p90'], 1e3)} | "
                  f"{fmt(r['max_rate'])} | {fmt(r['hit'], 1, 3)} | {fmt(r['cpu_per_1k'], 1, 2)} |"
                  f"  <!-- {time.perf_counter() - t0:.0f}s -->", flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
