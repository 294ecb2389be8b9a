"""Router replicas in the cluster simulator: how much routing quality splitting the router into N replicas costs.

For each (scenario, config, seed) the same requests (same arrivals) run on the scenario's cluster behind 1, 2 and 4
router replicas (``SimOptions.routers``; each replica with its own scheduler state, KV index fed by the engines' KV
events, and scrapes at its own phase; a round-robin balancer in front unless a variant says otherwise). Variants:

* ``split``  - independent replicas (what active-active replicas are without shared state);
* ``shared`` - the replicas share their in-flight load (``shared_load_delay``, the propagation delay of the store);
* ``shared+prefix`` - the replicas also share the decisions their prefix producers learn from (llm-d's approximate
  index; the precise producer's speculative entries);
* ``hash``   - a ``prefix-hash`` balancer: each replica owns a slice of the prefixes;
* ``hash+shared`` - both: a prefix-hash balancer and the shared load view.

Reported per (scenario, config, routers, variant), mean and range over the seeds: TTFT p90 and the engines'
prefix-cache hit rate at the matched rate (the routing-scenarios rates: shared-prefix 32/s, zipf 64/s; a long run of
``--matched-requests``), and with ``--sweep`` the max rate within the SLO (>= 90% of requests meet TTFT 1 s and TPOT
50 ms; the scenario's rates, a seed's sweep stops after two rates below). Each is compared with one replica's
("within 5%": TTFT p90 at most 5% higher, hit rate at most 5% lower, max rate at most 5% lower).

Usage: python benchmarks/router_replicas_sim.py [--scenarios shared-prefix,zipf]
       [--configs default,llm-d-optimized-baseline] [--seeds 0,1] [--routers 1,2,4] [--variants split,shared,hash]
       [--shared-delay 0.005] [--matched-requests 1500] [--sweep] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from routing_scenarios import sim_options  # noqa: E402

from llmd_kserve.bench.frontier import ATTAIN, max_rate_within_slo  # noqa: E402
from llmd_kserve.bench.scenarios import SCENARIOS, Scenario  # noqa: E402
from llmd_kserve.bench.sim_configs import sim_config  # noqa: E402
from llmd_kserve.bench.stats import SLO, summarize  # noqa: E402
from llmd_kserve.cluster_sim import ClusterSim  # noqa: E402

MATCHED = {"shared-prefix": 32.0, "zipf": 64.0}
"""The matched rates of the routing-scenarios table (0.8 x round-robin's max rate within the SLO)."""
STALL_FACTOR = 20.0
"""A run whose virtual clock passes this many times its arrival span is reported as stalled, not waited for."""


SHARED_PREFIX = ("inflight-load-producer", "approx-prefix-cache-producer", "precise-prefix-producer")
"""``shared+prefix``: the load view plus what each replica's prefix producers learn from its own decisions (llm-d's
approximate index; the precise producer's speculative entries for blocks not yet confirmed by KV events)."""


class Stalled(Exception):
    pass


def variant_options(variant: str, routers: int, shared_delay: float) -> dict[str, Any]:
    if routers == 1 or variant == "split":
        return {"routers": routers}
    if variant == "shared":
        return {"routers": routers, "shared_load_delay": shared_delay}
    if variant == "shared+prefix":
        return {"routers": routers, "shared_load_delay": shared_delay, "shared_plugins": SHARED_PREFIX}
    if variant == "hash+shared":
        return {"routers": routers, "balancer": "prefix-hash", "shared_load_delay": shared_delay}
    if variant == "hash":
        return {"routers": routers, "balancer": "prefix-hash"}
    raise ValueError(f"unknown variant {variant!r}")


def one_run(sc: Scenario, config: str, seed: int, rate: float, n: int, options: dict[str, Any]) -> dict[str, Any]:
    """As ``routing_scenarios.one_run`` (same requests for the same seed and rate), behind ``options``' routers."""
    n = max(n, int(rate * sc.min_duration_s))
    reqs = sc.build(rate, random.Random(seed * 7919 + int(rate * 1000)), n)
    sim = ClusterSim(sim_config(config), replace(sim_options(sc, seed), **options))
    span = max(r.arrival_s or 0.0 for r in reqs) + 1.0

    def guard(done: int, total: int) -> None:
        if sim.now > STALL_FACTOR * span:
            raise Stalled(f"{done}/{total} done at virtual {sim.now:.1f}s")

    run = sim.run(reqs, progress=guard)
    s = summarize(run.results, run.wall_s, SLO(sc.slo_ttft_s, sc.slo_tpot_s), engine_hit_rate=run.engine_hit_rate)
    return {"ttft_p90": s["ttft_p90"], "hit": run.engine_hit_rate or 0.0, "attain": s["slo_attainment"] or 0.0,
            "n": len(reqs), "shared": sim.shared.published if sim.shared else 0}


def spread(xs: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(xs), "min": min(xs), "max": max(xs)}


def evaluate(sc: Scenario, config: str, seeds: list[int], options: dict[str, Any], matched: float | None,
             matched_n: int, sweep: bool) -> dict[str, Any]:
    """``matched`` None: the sweep only."""
    per_seed = []
    for seed in seeds:
        row: dict[str, Any] = {}
        if matched is not None:
            try:
                m = one_run(sc, config, seed, matched, matched_n, options)
            except Stalled as exc:
                per_seed.append({"stalled": str(exc)})
                continue
            row = {"ttft_p90": m["ttft_p90"], "hit": m["hit"], "matched_attain": m["attain"]}
        if sweep:
            attain: dict[float, float] = {}
            misses = 0
            for r in sorted(sc.rates):
                try:
                    attain[r] = one_run(sc, config, seed, r, sc.num_requests, options)["attain"]
                except Stalled:
                    attain[r] = 0.0
                misses = misses + 1 if attain[r] < ATTAIN else 0
                if misses >= 2:
                    break
            row["max_rate"] = max_rate_within_slo(attain)
        per_seed.append(row)
    ok = [p for p in per_seed if "stalled" not in p]
    keys = (["ttft_p90", "hit"] if matched is not None else []) + (["max_rate"] if sweep else [])
    out: dict[str, Any] = {k: spread([p[k] for p in ok]) for k in keys} if ok else {}
    return out | {"per_seed": per_seed}


def within(one: dict[str, Any], many: dict[str, Any], key: str, tol: float = 0.05) -> str:
    if key not in one or key not in many:
        return "-"
    a, b = one[key]["mean"], many[key]["mean"]
    worse = (b - a) / a if key == "ttft_p90" else (a - b) / a
    return f"{'yes' if worse <= tol else 'no'} ({-worse * 100 if key != 'ttft_p90' else worse * 100:+.1f}%)"


def fmt(d: dict[str, float] | None, scale: float = 1.0, digits: int = 0) -> str:
    if not d:
        return "-"
    return f"{d['mean'] * scale:.{digits}f} ({d['min'] * scale:.{digits}f}-{d['max'] * scale:.{digits}f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenarios", default="shared-prefix,zipf")
    ap.add_argument("--configs", default="default,llm-d-optimized-baseline")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--routers", default="1,2,4")
    ap.add_argument("--variants", default="split,shared,hash")
    ap.add_argument("--shared-delay", type=float, default=0.005, help="propagation delay of the shared load view (s)")
    ap.add_argument("--matched-requests", type=int, default=1500)
    ap.add_argument("--sweep", action="store_true", help="also the max rate within the SLO (a rate sweep per seed)")
    ap.add_argument("--no-matched", action="store_true", help="skip the matched-rate run (with --sweep)")
    ap.add_argument("--rates", default="", help="sweep these rates (req/s) instead of the scenario's (with --sweep)")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    seeds = [int(s) for s in a.seeds.split(",")]
    counts = [int(n) for n in a.routers.split(",")]
    out: dict[str, Any] = {}
    print("| scenario | config | routers | variant | TTFT p90 ms | hit rate | max rate in SLO | p90 within 5% | "
          "hit within 5% | max rate within 5% |")
    print("|---|---|---:|---|---:|---:|---:|---|---|---|")
    for name in a.scenarios.split(","):
        sc = SCENARIOS[name]
        if a.rates:
            sc = replace(sc, rates=tuple(float(r) for r in a.rates.split(",")))
        matched = MATCHED.get(name, sc.matched_rate)
        for config in a.configs.split(","):
            one: dict[str, Any] | None = None
            for n in counts:
                for variant in (["split"] if n == 1 else a.variants.split(",")):
                    t0 = time.perf_counter()
                    opts = variant_options(variant, n, a.shared_delay)
                    r = evaluate(sc, config, seeds, opts, None if a.no_matched else matched, a.matched_requests,
                                 a.sweep)
                    out.setdefault(name, {}).setdefault(config, {})[f"{n}/{variant}"] = r
                    if n == 1:
                        one = r
                    base = one or {}
                    print(f"| {name} @ {matched:g}/s | {config} | {n} | {variant} | {fmt(r.get('ttft_p90'), 1e3)} | "
                          f"{fmt(r.get('hit'), 1, 3)} | {fmt(r.get('max_rate')) if a.sweep else '-'} | "
                          f"{within(base, r, 'ttft_p90')} | {within(base, r, 'hit')} | "
                          f"{within(base, r, 'max_rate') if a.sweep else '-'} |"
                          f"  <!-- {time.perf_counter() - t0:.0f}s -->", flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
