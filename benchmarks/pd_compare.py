"""Aggregated vs prefill/decode disaggregation on the same number of engines, in the cluster simulator.

Four simulated H100s (``h100-llama8b`` latency profile) serve each workload once as 4 aggregated replicas (role
``both``, the ``default`` config) and once as 2 prefill + 2 decode replicas under each P/D decider (``pd-never``,
``pd-always``, ``pd-uncached``, ``pd-predicted-ttft``); the real scheduler and plugins decide, the engine cores
step in virtual time (:mod:`llmd_kserve.cluster_sim`, P/D handoff in ``cluster_sim.pd``). Workloads (Poisson arrivals, ``bench.workloads``):

* rag        4.3k-7.4k-token prompts (shared 256-token instruction + 4-7 of 32 documents of 1k tokens), 64-128 out
* reasoning  64-256-token prompts, 1000-2000 out
* mixed      both, half and half, interleaved

Prints one table per workload and rate: TTFT / ITL p50 and p90, TPOT p50, goodput (requests/s meeting the SLO)
and the share of requests disaggregated. Usage::

    .venv/bin/python benchmarks/pd_compare.py [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import random
import time
from dataclasses import replace

from rich.console import Console
from rich.table import Table

from llmd_kserve.bench.stats import SLO, summarize
from llmd_kserve.bench.workloads import (
    ArrivalSpec,
    RagSpec,
    ReasoningSpec,
    RequestSpec,
    assign_arrivals,
    build_requests,
)
from llmd_kserve.cluster_sim import ClusterSim, SimOptions, pd_roles

AGG = pd_roles(both=4)
PD = pd_roles(prefill=2, decode=2)
SETUPS = [("4 x both, default", "default", AGG), ("2P+2D, pd-never", "pd-never", PD),
          ("2P+2D, pd-always", "pd-always", PD), ("2P+2D, pd-uncached(512)", "pd-uncached", PD),
          ("2P+2D, pd-predicted-ttft", "pd-predicted-ttft", PD)]
SLO_ = SLO(ttft=1.0, tpot=0.025)


def workload(kind: str, n: int, rate: float, seed: int) -> list[RequestSpec]:
    rng = random.Random(seed)
    rag = [replace(r, max_tokens=rng.randint(64, 128)) for r in build_requests(RagSpec(num_requests=n), rng)]
    reasoning = build_requests(ReasoningSpec(num_requests=n), rng)
    reqs = {"rag": rag, "reasoning": reasoning,
            "mixed": [r for pair in zip(rag[: n // 2], reasoning[: n // 2], strict=True) for r in pair]}[kind]
    return assign_arrivals(reqs, ArrivalSpec(pattern="poisson", rate=rate), rng)


def run(kind: str, n: int, rate: float, seed: int) -> list[dict]:
    reqs = workload(kind, n, rate, seed)
    rows = []
    for label, config, roles in SETUPS:
        t0 = time.perf_counter()
        sim = ClusterSim(config, SimOptions(roles=roles, seed=seed))
        out = sim.run(reqs)
        s = summarize(out.results, out.wall_s, SLO_)
        rows.append({"workload": kind, "rate": rate, "n": n, "setup": label, **{k: s[k] for k in (
            "ttft_p50", "ttft_p90", "itl_p50", "itl_p90", "tpot_p50", "goodput_rps", "slo_attainment")},
            "disaggregated": out.engine_counters.get("disaggregated", 0.0) / max(1, len(out.results)),
            "sim_s": time.perf_counter() - t0})
    return rows


def table(rows: list[dict]) -> Table:
    t = Table(title=f"{rows[0]['workload']} @ {rows[0]['rate']:g} req/s, {rows[0]['n']} requests "
                    f"(SLO: TTFT <= {SLO_.ttft:g}s, TPOT <= {SLO_.tpot * 1e3:g}ms)")
    for col in ("setup", "TTFT p50", "TTFT p90", "ITL p50", "ITL p90", "TPOT p50", "goodput r/s", "SLO met", "P/D"):
        t.add_column(col, justify="left" if col == "setup" else "right")
    best = max(r["goodput_rps"] for r in rows)
    for r in rows:
        mark = "*" if r["goodput_rps"] == best else ""
        t.add_row(r["setup"], f"{r['ttft_p50']:.3f}", f"{r['ttft_p90']:.3f}", f"{r['itl_p50'] * 1e3:.1f}ms",
                  f"{r['itl_p90'] * 1e3:.1f}ms", f"{r['tpot_p50'] * 1e3:.1f}ms", f"{r['goodput_rps']:.2f}{mark}",
                  f"{r['slo_attainment']:.0%}", f"{r['disaggregated']:.0%}")
    return t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer requests (a smoke run)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    plan = [("rag", 300, 8.0), ("rag", 300, 14.0), ("rag", 300, 18.0), ("reasoning", 200, 3.0),
            ("reasoning", 200, 6.0), ("mixed", 300, 7.0), ("mixed", 300, 10.0)]
    if a.quick:
        plan = [(k, max(20, n // 10), r) for k, n, r in plan[::2]]
    console = Console(width=140)
    everything = []
    for kind, n, rate in plan:
        rows = run(kind, n, rate, a.seed)
        everything += rows
        console.print(table(rows))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(everything, f, indent=1)


if __name__ == "__main__":
    main()
