"""Autoscaling in the cluster simulator over the Mooncake conversation trace's hour: our headroom policy, KEDA's
queue-length rule and static plans, side by side in SLO attainment and GPU-hours.

Every run replays the same requests (the trace fitted to the engines' context, its gaps times ``--time-scale``) on
simulated H100 replicas with the real router (``--config``, default ``default``) in the loop, and flow control at the
router (requests wait per priority band while every replica is saturated). Static plans keep N replicas; the
autoscaled runs start from ``--initial`` replicas and poll their policy every ``--poll-s``; a new replica takes
requests ``--startup-s`` after it is asked for, with an empty KV cache; a replica taken out drains first.

    python benchmarks/autoscale_replay.py --static 5,6,7,8 --policies headroom,keda-queue --jobs 4 \\
        --json autoscale.json --curve-csv autoscale_curve.csv

The best static plan is the smallest N whose attainment (share of requests with TTFT <= ``--slo-ttft`` and TPOT <=
``--slo-tpot``) reaches ``--attainment`` (0.95). GPU-hours: replica-seconds, start-up included, / 3600.
"""

from __future__ import annotations

import argparse
import csv
import json
import multiprocessing
import random
import sys
import time
from pathlib import Path
from typing import Any

from llmd_kserve.bench.runner import sim_context_len
from llmd_kserve.bench.stats import SLO, summarize
from llmd_kserve.bench.workloads import RequestSpec, build_requests, describe_trace, load_trace, parse_window
from llmd_kserve.cluster_sim import ClusterSim, SimOptions
from llmd_kserve.cluster_sim.autoscale import autoscale_options

TRACE = Path("/work/traces/conversation_trace.jsonl")
COLUMNS = ("plan", "n", "in SLO", "TTFT p90 ms", "TPOT p90 ms", "GPU-hours", "mean ready", "peak", "starts",
           "run s (virtual)")
_REQUESTS: list[RequestSpec] = []  # built once in the parent; forked workers inherit them


def _jobs(a: argparse.Namespace) -> list[tuple[str, int, dict[str, Any]]]:
    common = {"min_replicas": a.min_replicas, "max_replicas": a.max_replicas, "startup_s": a.startup_s,
              "poll_s": a.poll_s, "ttft_target_s": a.slo_ttft, "tpot_target_s": a.slo_tpot,
              "keda_target": a.keda_target,
              "stabilization_s": a.stabilization_s, "cooldown_s": a.cooldown_s}
    jobs = [("static", n, {**common, "min_replicas": 1, "max_replicas": max(n, a.max_replicas)})
            for n in _ints(a.static)]
    for p in (x for x in a.policies.split(",") if x):
        name, _, initial = p.partition("@")  # POLICY or POLICY@INITIAL
        jobs.append((name, int(initial) if initial else a.initial, dict(common)))
    return jobs


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def row(r: dict[str, Any]) -> list[str]:
    s, a = r["summary"], r["autoscale"]

    def ms(k: str) -> str:
        return "–" if s.get(k) is None else f"{s[k] * 1000:.0f}"

    return [r["plan"], str(s["n"]), f"{s['slo_attainment']:.1%}", ms("ttft_p90"), ms("tpot_p90"),
            f"{a['gpu_hours']:.3f}", f"{a['mean_ready']:.2f}", str(a["peak_replicas"]), str(a["starts"]),
            f"{r['wall_s']:.0f}"]


def markdown(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    return "\n".join(lines + ["| " + " | ".join(x) + " |" for x in rows])


def write_curves(results: list[dict[str, Any]], path: Path) -> None:
    """The replica curves as CSV: plan, t, ready, starting, draining, desired."""
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["plan", "t", "ready", "starting", "draining", "desired"])
        for r in results:
            for p in r["autoscale"]["curve"]:
                w.writerow([r["plan"], f"{p['t']:.3f}", p["ready"], p["starting"], p["draining"], p["desired"]])


def main(argv: list[str] | None = None) -> int:
    global _REQUESTS
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trace", type=Path, default=TRACE, help="Mooncake trace (default: the conversation trace)")
    ap.add_argument("--window", default=None, metavar="START:END", help="seconds of the trace (default: all of it)")
    ap.add_argument("--time-scale", type=float, default=0.2, help="multiply the recorded gaps (0.2: 5x faster)")
    ap.add_argument("--config", default="default", help="router config")
    ap.add_argument("--static", default="5,6,7,8", help="static replica counts to run")
    ap.add_argument("--policies", default="headroom,keda-queue",
                    help="autoscaling policies to run, each POLICY or POLICY@INITIAL (replicas at the start)")
    ap.add_argument("--initial", type=int, default=6, help="replicas at the start of an autoscaled run")
    ap.add_argument("--min-replicas", type=int, default=2)
    ap.add_argument("--max-replicas", type=int, default=12)
    ap.add_argument("--startup-s", type=float, default=60.0, help="seconds until a new replica takes requests")
    ap.add_argument("--poll-s", type=float, default=15.0, help="seconds between polls")
    ap.add_argument("--keda-target", type=float, default=2.0, help="keda-queue: queued requests per replica")
    ap.add_argument("--stabilization-s", type=float, default=300.0, help="keda-queue: scale-down window")
    ap.add_argument("--cooldown-s", type=float, default=120.0, help="headroom: calm seconds before a scale-down")
    ap.add_argument("--slo-ttft", type=float, default=2.0)
    ap.add_argument("--slo-tpot", type=float, default=0.05)
    ap.add_argument("--attainment", type=float, default=0.95, help="the static plan's bar")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=1, help="runs at once (processes)")
    ap.add_argument("--json", type=Path, default=None, help="every run's summary, GPU-hours and replica curve")
    ap.add_argument("--curve-csv", type=Path, default=None, help="the replica curves as CSV")
    a = ap.parse_args(argv)
    spec = load_trace(a.trace, window=parse_window(a.window) if a.window else None, max_model_len=sim_context_len())
    spec = spec.model_copy(update={"time_scale": a.time_scale})
    stats = describe_trace(spec)
    _REQUESTS = build_requests(spec, random.Random(a.seed))
    print(f"{a.trace.name}: {len(_REQUESTS)} requests over {stats.span_s:.0f} s recorded, replayed x{1 / a.time_scale:g}",
          file=sys.stderr, flush=True)
    jobs = [(p, n, {**kw, "seed": a.seed, "config": a.config, "slo_ttft": a.slo_ttft, "slo_tpot": a.slo_tpot})
            for p, n, kw in _jobs(a)]
    results: list[dict[str, Any]] = []
    with multiprocessing.get_context("fork").Pool(max(a.jobs, 1)) as pool:
        for r in pool.imap_unordered(_run_safe, jobs):
            print(f"  {r['plan']}: {r['summary']['slo_attainment']:.1%} in SLO, {r['autoscale']['gpu_hours']:.3f} "
                  f"GPU-hours ({r['cpu_s']:.0f} s)", file=sys.stderr, flush=True)
            results.append(r)
    results.sort(key=lambda r: (r["policy"] != "static", r["policy"], r["initial"]))
    statics = [r for r in results if r["policy"] == "static"]
    best = next((r for r in statics if r["summary"]["slo_attainment"] >= a.attainment), None)
    print(markdown([row(r) for r in results]))
    print(f"\nbest static plan (smallest N with >= {a.attainment:.0%} in SLO): "
          f"{best['plan'] if best else 'none of ' + a.static}")
    if a.json:
        a.json.write_text(json.dumps({"trace": a.trace.name, "time_scale": a.time_scale, "requests": len(_REQUESTS),
                                      "best_static": best["plan"] if best else None, "runs": results}, indent=1))
    if a.curve_csv:
        write_curves(results, a.curve_csv)
    return 0


def _run_safe(job: tuple[str, int, dict[str, Any]]) -> dict[str, Any]:
    """One simulated run: ``(policy, initial replicas, options)``."""
    policy, n, kw = job
    kw = dict(kw)
    slo_ttft, slo_tpot = kw.pop("slo_ttft"), kw.pop("slo_tpot")
    config = kw.pop("config")
    seed = kw.pop("seed")
    opts = SimOptions(seed=seed, autoscale=autoscale_options(policy, initial_replicas=n, **kw))
    t0 = time.perf_counter()
    run = ClusterSim(config, opts).run(_REQUESTS)
    s = summarize(run.results, run.wall_s, SLO(slo_ttft, slo_tpot))
    s.pop("per_request", None)
    label = f"static {n}" if policy == "static" else f"{policy} (from {n})"
    return {"plan": label, "policy": policy, "initial": n, "summary": s, "autoscale": run.autoscale or {},
            "wall_s": run.wall_s, "cpu_s": time.perf_counter() - t0}


if __name__ == "__main__":
    sys.exit(main())
