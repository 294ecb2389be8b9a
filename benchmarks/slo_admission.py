"""SLO admission under overload, in the cluster simulator: priority >= 0 keeps its TTFT SLO, sheddable work goes first.

1. The sustainable rate: the scenario's rate sweep under ``default`` with no objectives; the highest rate up to
   which >= ``--attain`` of the requests meet the scenario's TTFT and TPOT SLO (the routing scenarios' rule).
2. Overload at ``--overload`` x that rate (1.5), every request with the scenario's TTFT and TPOT targets, every
   other one sheddable (priority -1, the rest 0), under configs that differ only in admission:
   ``no-admission`` (``default`` without ``latency-slo-admitter``), ``reject`` (``default``: sheddable requests no
   endpoint can serve in time get 429), ``queue`` (``onMiss: queue``, ``maxWaitS``) and ``llm-d-rule`` (``reject``
   with llm-d's rule alone: ``reserve: 0``, and the TTFT model of ``predicted-ttft-scorer``).
Reported per config and seed: TTFT SLO attainment of priority >= 0 and of sheddable requests (of all sent), shed
per band, TTFT p90 per band, goodput (requests meeting both targets per second of the run) overall and per band.

Usage: PYTHONPATH=. python benchmarks/slo_admission.py [--scenario shared-prefix] [--seeds 0,1,2] [--overload 1.5]
       [--rates 160,200,240] [--rate R (skip the sweep)] [--max-wait 0.5] [--variants a,b] [--json out.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import tempfile
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import yaml

import llmd_kserve.config
from llmd_kserve.bench.frontier import ATTAIN, max_rate_within_slo
from llmd_kserve.bench.scenarios import SCENARIOS, Scenario
from llmd_kserve.bench.stats import SLO, RequestResult, percentile, summarize
from llmd_kserve.bench.workloads import RequestSpec
from llmd_kserve.cluster_sim.sim import ClusterSim
from llmd_kserve.types import Objective

ADMITTER = "latency-slo-admitter"


def configs(tmp: Path, max_wait: float) -> dict[str, Path]:
    """The admission variants of the shipped ``default``, as files in ``tmp``."""
    doc = yaml.safe_load((Path(llmd_kserve.config.__file__).parent / "shipped" / "default.yaml").read_text())
    [admitter] = [p for p in doc["plugins"] if p["type"] == ADMITTER]
    bare = copy.deepcopy(doc)
    for profile in bare["schedulingProfiles"]:
        profile["plugins"] = [p for p in profile["plugins"] if p["pluginRef"] != ADMITTER]
    llmd_rule = copy.deepcopy(doc)
    [plain] = [p for p in llmd_rule["plugins"] if p["type"] == ADMITTER]
    plain["parameters"] |= {"reserve": 0.0, "tokensPerWaitingRequest": 0}
    admitter["parameters"] |= {"onMiss": "queue", "maxWaitS": max_wait}
    out = {}
    for name, variant in (("no-admission", bare), ("reject", None), ("queue", doc), ("llm-d-rule", llmd_rule)):
        out[name] = tmp / f"{name}.yaml"
        if variant is None:
            out[name].write_text((Path(llmd_kserve.config.__file__).parent / "shipped" / "default.yaml").read_text())
        else:
            out[name].write_text(yaml.safe_dump(variant))
    return out


def run(sc: Scenario, config: str | Path, seed: int, rate: float, objectives: bool) -> tuple[list[RequestResult],
                                                                                              float, list[RequestSpec]]:
    from benchmarks.routing_scenarios import sim_options  # noqa: PLC0415 - the scenarios' cluster, one definition

    n = max(sc.num_requests, int(rate * sc.min_duration_s))
    reqs = sc.build(rate, random.Random(seed * 7919 + int(rate * 1000)), n)
    if objectives:  # every other request sheddable; all with the scenario's targets
        reqs = [replace(r, objective=Objective(-1 if i % 2 else 0, sc.slo_ttft_s, sc.slo_tpot_s))
                for i, r in enumerate(reqs)]
    out = ClusterSim(config, sim_options(sc, seed)).run(reqs)
    return out.results, out.wall_s, reqs


def sustainable(sc: Scenario, seeds: list[int], attain: float) -> tuple[float, dict[float, float]]:
    """(the lowest over seeds of the max rate within the SLO, rate -> mean attainment) under ``default``."""
    slo = SLO(sc.slo_ttft_s, sc.slo_tpot_s)
    per_seed, table = [], {}
    for seed in seeds:
        att = {}
        for rate in sorted(sc.rates):
            results, wall, _ = run(sc, "default", seed, rate, objectives=False)
            att[rate] = summarize(results, wall, slo)["slo_attainment"] or 0.0
            print(f"  sweep seed {seed} rate {rate:g}: {att[rate]:.3f} within SLO", flush=True)
            if att[rate] < attain:
                break
        per_seed.append(max_rate_within_slo(att, attain))
        for rate, a in att.items():
            table.setdefault(rate, []).append(a)
    return min(per_seed), {r: sum(v) / len(v) for r, v in table.items()}


def judge(sc: Scenario, results: list[RequestResult], wall: float, reqs: list[RequestSpec]) -> dict[str, Any]:
    band = {r.request_id: ("sheddable" if r.objective is not None and r.objective.sheddable else "priority>=0")
            for r in reqs}
    slo = SLO(sc.slo_ttft_s, sc.slo_tpot_s)
    out: dict[str, Any] = {"wall_s": wall}
    good_all = 0
    for name in ("priority>=0", "sheddable"):
        rs = [r for r in results if band[r.request_id] == name]
        ok = [r for r in rs if r.ok]
        ttft_met = sum(r.ttft is not None and r.ttft <= sc.slo_ttft_s for r in ok)
        good = sum(slo.met(r) for r in rs)
        good_all += good
        out[name] = {"sent": len(rs), "shed": sum(r.shed for r in rs), "errors": sum(not r.ok and not r.shed for r in rs),
                     "ttft_attain": ttft_met / len(rs) if rs else None,
                     "ttft_p90": percentile([r.ttft for r in ok if r.ttft is not None], 90),
                     "goodput_rps": good / wall if wall else 0.0}
    out["goodput_rps"] = good_all / wall if wall else 0.0
    return out


def _span(js: list[dict[str, Any]], f: Any) -> str:
    xs = [f(j) for j in js]
    return f"{sum(xs) / len(xs):.3f} ({min(xs):.3f}..{max(xs):.3f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenario", default="shared-prefix", choices=sorted(SCENARIOS))
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--overload", type=float, default=1.5)
    ap.add_argument("--attain", type=float, default=ATTAIN, help="SLO attainment that counts as sustainable")
    ap.add_argument("--max-wait", type=float, default=0.5, help="maxWaitS of the queue variant")
    ap.add_argument("--rates", default=None, help="the sweep's rates (default: the scenario's), e.g. 160,200,240")
    ap.add_argument("--rate", type=float, default=None, help="skip the sweep: this sustainable rate")
    ap.add_argument("--variants", default="no-admission,reject,queue,llm-d-rule")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    sc = SCENARIOS[a.scenario]
    seeds = [int(s) for s in a.seeds.split(",")]
    if a.rates:
        sc = replace(sc, rates=tuple(float(r) for r in a.rates.split(",")))
    report: dict[str, Any] = {"scenario": sc.name, "slo_ttft_s": sc.slo_ttft_s, "slo_tpot_s": sc.slo_tpot_s,
                              "seeds": seeds, "overload": a.overload}
    if a.rate is None:
        rate, table = sustainable(sc, seeds, a.attain)
        report["sweep_attainment"] = table
        print(f"{sc.name}: sweep attainment {table}; sustainable {rate:g} req/s (>= {a.attain:.0%} within SLO)")
    else:
        rate = a.rate
    report["sustainable_rps"], report["overload_rps"] = rate, rate * a.overload
    print(f"overload: {rate * a.overload:g} req/s, half sheddable")
    runs: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        variants = {k: v for k, v in configs(Path(tmp), a.max_wait).items() if k in a.variants.split(",")}
        for seed in seeds:
            for name, path in variants.items():
                results, wall, reqs = run(sc, path, seed, rate * a.overload, objectives=True)
                j = judge(sc, results, wall, reqs)
                runs.setdefault(name, []).append(j)
                hi, lo = j["priority>=0"], j["sheddable"]
                print(f"{name:13s} seed {seed}: priority>=0 TTFT met {hi['ttft_attain']:.3f} (p90 "
                      f"{(hi['ttft_p90'] or 0) * 1e3:.0f} ms, shed {hi['shed']}/{hi['sent']}); sheddable TTFT met "
                      f"{lo['ttft_attain']:.3f} (shed {lo['shed']}/{lo['sent']}); goodput {j['goodput_rps']:.1f} "
                      f"req/s ({hi['goodput_rps']:.1f} + {lo['goodput_rps']:.1f})", flush=True)
    report["runs"] = runs
    print("mean over seeds (min..max):")
    for name, js in runs.items():
        span = partial(_span, js)
        print(f"  {name:13s} priority>=0 TTFT met {span(lambda j: j['priority>=0']['ttft_attain'])}, "
              f"shed {sum(j['priority>=0']['shed'] for j in js)}; sheddable shed share "
              f"{span(lambda j: j['sheddable']['shed'] / j['sheddable']['sent'])}; goodput req/s "
              f"{span(lambda j: j['goodput_rps'])}")
    if a.json:
        Path(a.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
