"""Routing scenarios (issue 15) in the cluster simulator: every scenario x config, a rate sweep, several seeds.

For each (scenario, config, seed, rate) one virtual-time run of the same requests (same seed, same arrivals for
every config) on the scenario's cluster; reported per (scenario, config), as mean and spread (min..max) over seeds:
TTFT p50/p90 at the matched rate, the max rate within the SLO (highest swept rate up to which >= 90% of
requests meet TTFT and TPOT objectives), the engines' prefix-cache hit rate (their own counters, at the matched rate)
and the router's CPU seconds per 1,000 requests (process time inside ``Scheduler.schedule``, all rates).

The matched rate (the rule, also the demo's: ``llmd_kserve.demo_sweep.matched_rate``): ``--matched-fraction``
(0.8) of round-robin's max rate within the SLO (the lowest over the seeds), so every scenario compares the
policies at the same distance below the cache-blind policy's saturation; 0 uses the scenario's fixed
``matched_rate``. The matched run is long (``--matched-requests``, 1,500, and at least ``min_duration_s``), so its
p90 is the steady state's and not the share of each group's cold first request; except in session scenarios
(``Scenario.sessions``: chat, agentic), where more requests would mean more concurrent sessions.

Usage: .venv/bin/python benchmarks/routing_scenarios.py [--scenarios a,b] [--configs a,b] [--seeds 0,1]
       [--num-requests N (at least rate x the scenario's min_duration_s)] [--matched-fraction 0.8]
       [--matched-rate R] [--matched-requests 1500] [--rates 100,200] [--extra-rates 250,300] [--window 8] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from dataclasses import replace
from typing import Any

from llmd_kserve.bench.frontier import ATTAIN, max_rate_within_slo
from llmd_kserve.bench.scenarios import SCENARIOS, Scenario
from llmd_kserve.bench.sim_configs import sim_config
from llmd_kserve.bench.stats import SLO, summarize
from llmd_kserve.cluster_sim import SimOptions
from llmd_kserve.cluster_sim.sim import ClusterSim
from llmd_kserve.demo_sweep import matched_rate
from llmd_kserve.latency import load_profile

CONFIGS = "round-robin,load-only,approx-prefix,precise-prefix,llm-d-optimized-baseline,default"


def sim_options(sc: Scenario, seed: int) -> SimOptions:
    profile: Any = "h100-llama8b"
    if sc.max_model_len:
        profile = load_profile(profile).model_copy(update={"max_model_len": sc.max_model_len,
                                                           "name": f"h100-llama8b-{sc.max_model_len}"})
    return SimOptions(engines=sc.engines, roles=sc.roles, profile=profile, engine_profiles=sc.engine_profiles,
                      num_blocks=sc.num_blocks, kv_event_delay=sc.kv_event_delay, seed=seed)


def one_run(sc: Scenario, config: str, seed: int, rate: float, n: int) -> dict[str, Any]:
    n = max(n, int(rate * sc.min_duration_s))  # long enough at every rate for queues to build (or not)
    reqs = sc.build(rate, random.Random(seed * 7919 + int(rate * 1000)), n)
    sim = ClusterSim(sim_config(config), sim_options(sc, seed))
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


def spread(xs: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(xs), "min": min(xs), "max": max(xs)}


def sweep(sc: Scenario, config: str, seeds: list[int], n: int, stop_after: int = 0
          ) -> dict[int, dict[float, dict[str, Any]]]:
    """seed -> rate -> one run, over the scenario's sweep; with ``stop_after``, a seed's sweep stops after that
    many consecutive rates below the SLO attainment (the max rate within the SLO does not look past the first)."""
    out: dict[int, dict[float, dict[str, Any]]] = {}
    for seed in seeds:
        runs, misses = out.setdefault(seed, {}), 0
        for r in sorted(sc.rates):
            runs[r] = one_run(sc, config, seed, r, n)
            misses = misses + 1 if runs[r]["attain"] < ATTAIN else 0
            if stop_after and misses >= stop_after:
                break
    return out


def evaluate(sc: Scenario, config: str, seeds: list[int], n: int, matched: float, matched_n: int,
             runs: dict[int, dict[float, dict[str, Any]]] | None = None, stop_after: int = 0) -> dict[str, Any]:
    """One (scenario, config): the sweep (``runs`` if already done) plus a long run at the ``matched`` rate."""
    runs = runs or sweep(sc, config, seeds, n, stop_after)
    per_seed: list[dict[str, Any]] = []
    for seed in seeds:
        m = one_run(sc, config, seed, matched, n if sc.sessions else matched_n)
        every = [*runs[seed].values(), m]
        per_seed.append({"ttft_p50": m["ttft_p50"], "ttft_p90": m["ttft_p90"], "hit": m["hit"] or 0.0,
                         "matched_attain": m["attain"], "matched_n": m["n"],
                         "max_rate": max_rate_within_slo({r: x["attain"] for r, x in runs[seed].items()}),
                         "cpu_per_1k": 1000 * sum(x["cpu_s"] for x in every) / sum(x["n"] for x in every),
                         "attain": {r: x["attain"] for r, x in runs[seed].items()}})
    keys = ("ttft_p50", "ttft_p90", "hit", "max_rate", "cpu_per_1k")
    return {k: spread([p[k] for p in per_seed]) for k in keys} | {"matched_rate": matched, "per_seed": per_seed}


def fmt(d: dict[str, float], scale: float = 1.0, digits: int = 0) -> str:
    return f"{d['mean'] * scale:.{digits}f} ({d['min'] * scale:.{digits}f}-{d['max'] * scale:.{digits}f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenarios", default=",".join(SCENARIOS))
    ap.add_argument("--configs", default=CONFIGS)
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--num-requests", type=int, default=None, help="default: each scenario's")
    ap.add_argument("--extra-rates", default="", help="rates (req/s) added to every scenario's sweep, e.g. 250,300")
    ap.add_argument("--rates", default="", help="rates (req/s) that replace the scenario's sweep (one scenario: around "
                                                "its knee, to spend less CPU)")
    ap.add_argument("--matched-fraction", type=float, default=0.8,
                    help="matched rate = this x round-robin's max rate within the SLO (0: the scenario's own)")
    ap.add_argument("--matched-rate", type=float, default=None,
                    help="use this matched rate (req/s) instead of deriving it (e.g. a previous run's, to add a config "
                         "without re-running round-robin's sweep)")
    ap.add_argument("--matched-requests", type=int, default=1500, help="requests of the matched-rate run")
    ap.add_argument("--window", type=float, default=None,
                    help="virtual seconds of arrivals per run at least (default: the scenario's min_duration_s, 8)")
    ap.add_argument("--stop-after", type=int, default=0,
                    help="stop a seed's sweep after this many consecutive rates below the SLO (0: run every rate)")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    extra = tuple(float(r) for r in a.extra_rates.split(",") if r)
    only = tuple(float(r) for r in a.rates.split(",") if r)
    seeds = [int(s) for s in a.seeds.split(",")]
    out: dict[str, Any] = {}
    print("| scenario | config | TTFT p50 ms | TTFT p90 ms | max rate in SLO (req/s) | hit rate | router CPU s/1k |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name in a.scenarios.split(","):
        sc = SCENARIOS[name]
        if only:
            sc = replace(sc, rates=only)
        if extra:
            sc = replace(sc, rates=tuple(sorted(set(sc.rates) | set(extra))))
        if a.window:
            sc = replace(sc, min_duration_s=a.window)
        n = a.num_requests or sc.num_requests
        rr = sweep(sc, sc.baseline, seeds, n, a.stop_after) if a.matched_fraction > 0 and a.matched_rate is None else None
        if a.matched_rate is not None:
            matched = a.matched_rate
        elif rr:
            matched = matched_rate([max_rate_within_slo({r: x["attain"] for r, x in rr[s].items()}) for s in seeds],
                                   a.matched_fraction, min(sc.rates))
        else:
            matched = sc.matched_rate
        for config in sc.configs or a.configs.split(","):
            t0 = time.perf_counter()
            r = out.setdefault(name, {})[config] = evaluate(sc, config, seeds, n, matched, a.matched_requests,
                                                            rr if config == sc.baseline else None, a.stop_after)
            print(f"| {name} @ {matched:g}/s | {config} | {fmt(r['ttft_p50'], 1e3)} | {fmt(r['ttft_p90'], 1e3)} | "
                  f"{fmt(r['max_rate'])} | {fmt(r['hit'], 1, 3)} | {fmt(r['cpu_per_1k'], 1, 2)} |"
                  f"  <!-- {time.perf_counter() - t0:.0f}s -->", flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
