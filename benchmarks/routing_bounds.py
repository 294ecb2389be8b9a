"""Upper references for the routing scenarios (issue 15): how far below any router's reach is a policy's max rate?

Two references per scenario, in the cluster simulator with the scenario's engines, SLO and rate grid:

* ``compute bound`` - perfect prefix cache and perfect balance: the scenario's requests with ONE shared prefix
  group (every request after the first on an engine is a cache hit), routed by round-robin and by the
  load-aware configs (``load-only``, and ``default`` for unequal engines, which knows each engine's speed); the
  best max rate of those. No router can beat it on that cluster: it needs no prefix switching at all.
* ``clairvoyant partition`` - the real requests, routed by a policy that knows every request's group and the
  whole run's popularity in advance: groups are packed onto engines by load (longest first, each engine's share
  in proportion to its speed), a group hotter than ``SPLIT`` of an engine's share is split over several replicas,
  and a request goes to its group's replica with the fewest in-flight requests per unit of speed. A strong
  hand-made reference, not a bound: it ignores KV capacity when packing.

Usage: .venv/bin/python benchmarks/routing_bounds.py [--scenarios zipf,unequal] [--seeds 0,1]
       [--rates 200,220,...] [--window 8] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from routing_scenarios import one_run, sim_options  # noqa: E402

from llmd_kserve.bench.frontier import max_rate_within_slo  # noqa: E402
from llmd_kserve.bench.scenarios import SCENARIOS, Scenario, _poisson  # noqa: E402
from llmd_kserve.bench.stats import SLO, summarize  # noqa: E402
from llmd_kserve.bench.workloads import SharedPrefixSpec  # noqa: E402
from llmd_kserve.cluster_sim.sim import ClusterSim  # noqa: E402
from llmd_kserve.latency import load_profile  # noqa: E402
from llmd_kserve.scheduling.interface import SchedulingResult  # noqa: E402

SPLIT = 0.6


def one_group(sc: Scenario) -> Scenario:
    """The scenario's request shape with a single shared prefix (3,000 + 128 tokens in, 64 out)."""
    return replace(sc, build=_poisson(SharedPrefixSpec(num_groups=1, system_prompt_len=3000, question_len=128,
                                                       output_len=64)))


def speeds(sc: Scenario) -> list[float]:
    names = sc.engine_profiles or ("h100-llama8b",) * sc.engines
    return [1.0 / load_profile(n).per_token_s for n in names]


def partition(counts: Counter[str], speed: list[float]) -> dict[str, list[int]]:
    """group -> engines: longest-first packing onto engines by share of speed, hot groups split."""
    total, s = sum(counts.values()), sum(speed)
    target = [total * v / s for v in speed]
    load = [0.0] * len(speed)
    out: dict[str, list[int]] = {}
    for g, w in counts.most_common():
        k = min(len(speed), max(1, math.ceil(w / (SPLIT * min(target)))))
        out[g] = []
        for _ in range(k):
            e = min((i for i in range(len(speed)) if i not in out[g]), key=lambda i: load[i] / target[i])
            out[g].append(e)
            load[e] += w / k
    return out


def clairvoyant_run(sc: Scenario, seed: int, rate: float, n: int) -> dict[str, Any]:
    n = max(n, int(rate * sc.min_duration_s))
    reqs = sc.build(rate, random.Random(seed * 7919 + int(rate * 1000)), n)
    group = {r.request_id: r.group or r.session_id or r.request_id for r in reqs}
    sim = ClusterSim("round-robin", sim_options(sc, seed))
    speed = speeds(sc)
    home = partition(Counter(group.values()), speed)
    ids = [e.id for e in sim.engines]
    inflight = [0] * len(ids)

    def schedule(llm: Any, states: Any) -> SchedulingResult:
        e = min(home[group[llm.request_id]], key=lambda i: (inflight[i] + 1) / speed[i])
        inflight[e] += 1
        n_tok = len(llm.token_ids or ())
        return SchedulingResult(llm.request_id, ids[e], None, n_tok, 0, "clairvoyant", {}, {})

    def on_complete(llm: Any, res: SchedulingResult, outcome: Any) -> None:
        inflight[ids.index(res.target)] -= 1

    sim.scheduler.schedule = schedule  # type: ignore[method-assign]
    sim.scheduler.on_complete = on_complete  # type: ignore[method-assign]
    run = sim.run(reqs)
    s = summarize(run.results, run.wall_s, SLO(sc.slo_ttft_s, sc.slo_tpot_s), engine_hit_rate=run.engine_hit_rate)
    return {"attain": s["slo_attainment"] or 0.0, "hit": run.engine_hit_rate}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenarios", default="zipf,unequal")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--rates", default="", help="the sweep (default: the scenario's)")
    ap.add_argument("--window", type=float, default=None,
                    help="virtual seconds of arrivals per run (default: the scenario's min_duration_s, 8)")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    seeds = [int(s) for s in a.seeds.split(",")]
    out: dict[str, Any] = {}
    for name in a.scenarios.split(","):
        sc = SCENARIOS[name]
        rates = tuple(float(r) for r in a.rates.split(",")) if a.rates else sc.rates
        sc = replace(sc, rates=rates, min_duration_s=a.window or sc.min_duration_s)
        one = one_group(sc)
        res: dict[str, Any] = out.setdefault(name, {})
        configs = ("round-robin", "load-only") + (("default",) if sc.engine_profiles else ())
        for config in configs:
            per = [max_rate_within_slo({r: one_run(one, config, s, r, sc.num_requests)["attain"] for r in rates}) for s in seeds]
            res[f"compute bound ({config})"] = per
            print(name, f"compute bound ({config})", per, flush=True)
        per, att = [], {}
        for s in seeds:
            runs = {r: clairvoyant_run(sc, s, r, sc.num_requests) for r in rates}
            att[s] = {r: (round(x["attain"], 3), round(x["hit"] or 0, 3)) for r, x in runs.items()}
            per.append(max_rate_within_slo({r: x["attain"] for r, x in runs.items()}))
        res["clairvoyant partition"] = per
        res["clairvoyant attainment, hit"] = att
        print(name, "clairvoyant partition", per, att, flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
