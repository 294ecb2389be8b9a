"""Trace replay: every trace x router config, in the cluster simulator or live against a running router.

For each trace (the shipped Mooncake excerpts by default, or files given with ``--trace``) and each config, one
replay with the trace's own timestamps (``--time-scale`` multiplies the gaps), requests fitted to the context
(clipped; the ``clipped`` column counts them). One row per run: requests, errors, TTFT p50/p90, TPOT p50, E2E p50,
output tokens/s, the engines' prefix-cache hit rate and, for scale, the hit rate a cache that never evicts would
reach on that trace (``bound``).

    # simulated (virtual time; the real scheduler and plugins; 8 engines):
    python benchmarks/trace_replay.py --sim [--configs round-robin,default] [--engines 8]
    python benchmarks/trace_replay.py --sim --trace conversation_trace.jsonl --window 0:900 --time-scale 0.5
    # live: start a router (``llmd-kserve up --config default``), then name the config it runs:
    python benchmarks/trace_replay.py --target http://127.0.0.1:8080 --configs default

``--json FILE`` keeps every run (bench JSON schema, ``runs[].trace`` names the trace); ``--br-dir DIR`` also writes
one llm-d Benchmark Report v0.2.1 per run. Live runs send requests in real time: a full one-hour trace takes an
hour unless ``--time-scale`` shortens it.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from llmd_kserve.bench.llmd_br import write_benchmark_reports
from llmd_kserve.bench.progress import RunProgress
from llmd_kserve.bench.report import build_report, run_entry_from, write_json
from llmd_kserve.bench.runner import sim_context_len, workload_info
from llmd_kserve.bench.stats import SLO
from llmd_kserve.bench.workloads import (
    ArrivalSpec,
    TraceSpec,
    build_requests,
    describe_trace,
    fit_summary,
    load_trace,
    parse_window,
)

HERE = Path(__file__).resolve().parent
EXCERPTS = sorted((HERE / "traces").glob("*.jsonl"))
COLUMNS = ("trace", "config", "mode", "n", "clipped", "errors", "TTFT p50 ms", "TTFT p90 ms", "TPOT p50 ms",
           "E2E p50 s", "out tok/s", "hit rate", "bound")


def _sim(spec: TraceSpec, config: str, engines: int, seed: int, progress: RunProgress) -> dict[str, Any]:
    from llmd_kserve.cluster_sim import run_bench

    return run_bench(workload=spec, arrivals=[ArrivalSpec(pattern="trace")], seed=seed, engines=engines,
                     config=config, policy_label=config, progress=progress)[0]


def _live(spec: TraceSpec, config: str, target: str, seed: int, timeout: float) -> dict[str, Any]:
    import random

    from llmd_kserve.aio import run
    from llmd_kserve.bench.loadgen import LoadConfig, run_load

    arrival = ArrivalSpec(pattern="trace")
    requests = build_requests(spec, random.Random(seed))
    result = run(run_load(requests, arrival, LoadConfig(target=target, timeout_s=timeout)))
    return run_entry_from(result, config, SLO(), scale="live")


def _row(trace: str, run: dict[str, Any], clipped: int, bound: float | None) -> list[str]:
    s = run["summary"]

    def ms(key: str) -> str:
        return "–" if s.get(key) is None else f"{s[key] * 1000:.1f}"

    def pct(v: float | None) -> str:
        return "–" if v is None else f"{v:.1%}"

    return [trace, run["policy"], run.get("scale", ""), str(s["n"]), str(clipped), str(s["errors"]),
            ms("ttft_p50"), ms("ttft_p90"), ms("tpot_p50"), "–" if s.get("e2e_p50") is None else f"{s['e2e_p50']:.2f}",
            "–" if s.get("output_tok_s") is None else f"{s['output_tok_s']:.0f}", pct(s.get("cache_hit_rate")),
            pct(bound)]


def markdown(rows: list[list[str]]) -> str:
    """The table in Markdown."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trace", action="append", type=Path, help="trace file (repeat; default: the shipped excerpts)")
    ap.add_argument("--configs", default="round-robin,load-only,precise-prefix,default", help="router configs")
    where = ap.add_mutually_exclusive_group(required=True)
    where.add_argument("--sim", action="store_true", help="replay in the cluster simulator")
    where.add_argument("--target", default=None, help="replay live against this router URL (one config)")
    ap.add_argument("--engines", type=int, default=8, help="simulated engines")
    ap.add_argument("--time-scale", type=float, default=1.0, help="multiply the recorded gaps (0.1: 10x faster)")
    ap.add_argument("--window", default=None, metavar="START:END", help="seconds of each trace to replay")
    ap.add_argument("--max-requests", type=int, default=None, help="at most this many requests per trace")
    ap.add_argument("--max-model-len", type=int, default=None, help="context to fit (default: the engines')")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=600.0, help="live: per-request timeout, seconds")
    ap.add_argument("--json", type=Path, default=None, help="write every run (bench JSON schema) here")
    ap.add_argument("--br-dir", type=Path, default=None, help="write one Benchmark Report v0.2.1 per run here")
    ap.add_argument("--no-progress", action="store_true")
    a = ap.parse_args(argv)
    configs = [c.strip() for c in a.configs.split(",") if c.strip()]
    if a.target and len(configs) != 1:
        ap.error("--target runs the router as it is: name the one config it runs with --configs")
    traces = a.trace or EXCERPTS
    context = a.max_model_len or (sim_context_len() if a.sim else None)
    rows, runs = [], []
    for path in traces:
        spec = load_trace(path, time_scale=a.time_scale, window=parse_window(a.window) if a.window else None,
                          max_requests=a.max_requests, max_model_len=context)
        stats, fit = describe_trace(spec), fit_summary(spec)
        print(f"{path.name}: {len(spec.entries)} requests over {stats.span_s:.0f} s "
              f"({stats.span_s * a.time_scale:.0f} s replayed); {fit.line()}", file=sys.stderr)
        for config in configs:
            t0 = time.perf_counter()
            if a.sim:
                with RunProgress(not a.no_progress) as bar:
                    run = _sim(spec, config, a.engines, a.seed, bar)
            else:
                run = _live(spec, config, a.target, a.seed, a.timeout)
            print(f"  {config}: {run['summary']['n']} requests in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
            run["trace"] = path.name
            rows.append(_row(path.name, run, fit.clipped, stats.prefix_hit_bound))
            runs.append((spec, run))
    print(markdown(rows))
    if a.json or a.br_dir:
        docs = [build_report(workload_info(spec, [ArrivalSpec(pattern="trace")], mode="sim" if a.sim else "live",
                                           engines=a.engines if a.sim else None, seed=a.seed), [run])
                for spec, run in runs]
        if a.json:
            write_json({"table": [dict(zip(COLUMNS, r, strict=True)) for r in rows], "reports": docs}, a.json)
        if a.br_dir:
            a.br_dir.mkdir(parents=True, exist_ok=True)
            for doc in docs:
                run = doc["runs"][0]
                write_benchmark_reports(doc, a.br_dir / f"{Path(run['trace']).stem}.{run['policy']}.br.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
