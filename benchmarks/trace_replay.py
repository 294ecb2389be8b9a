"""Trace replay: every trace x router config x time scale, in the cluster simulator or live, with the highest time
compression each config sustains within an SLO.

For each trace (the shipped Mooncake excerpts by default, or files given with ``--trace``), each config and each
time scale (``--time-scales 1,0.5,0.25``: the recorded gaps multiplied, 0.25 = four times faster), one replay with
requests fitted to the context (clipped; the ``clipped`` column counts them). One row per run: requests, errors,
TTFT and TPOT p50/p90/p99, the share of requests within the SLO (``--slo-ttft``, ``--slo-tpot``), goodput, the
engines' prefix-cache hit rate and, for scale, the hit rate a cache that never evicts would reach (``bound``).
A run sustains its load when ``--attainment`` of its requests met the SLO; ``--refine N`` adds up to N runs per
config between the fastest sustained and the slowest failing scale. The second table gives each config's highest
sustained compression.

    # simulated (virtual time; the real scheduler and plugins; 8 engines):
    python benchmarks/trace_replay.py --sim [--configs round-robin,default] [--engines 8]
    python benchmarks/trace_replay.py --sim --trace synthetic_trace.jsonl --time-scales 1,0.5,0.25,0.1 --refine 2
    python benchmarks/trace_replay.py --sim --prefill 4 --decode 4 --configs pd-predicted-ttft,pd-never
    # live, a fresh local stack of simulated engines per run (vllm-router: vLLM's router in front of the engines):
    python benchmarks/trace_replay.py --live 4 --window 0:300 --time-scale 0.5 --configs default,vllm-router
    # live on a P/D cluster (2 prefill + 2 decode engines):
    python benchmarks/trace_replay.py --live 4 --prefill 2 --decode 2 --time-scale 0.5 --configs pd-always
    # live against a router already running (name the config it runs):
    python benchmarks/trace_replay.py --target http://127.0.0.1:8080 --configs default

``--json FILE`` keeps every run (bench JSON schema, ``runs[].trace`` names the trace), rewritten after each run;
``--br-dir DIR`` also writes one llm-d Benchmark Report v0.2.1 per run. Live runs send requests in real time: a
full one-hour trace takes an hour unless ``--time-scale`` shortens it.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from trace_live import peer_policy, run_live_stack  # noqa: E402

from llmd_kserve.bench.compression import DEFAULT_ATTAINMENT, knee, next_scale, parse_scales, sustains  # noqa: E402
from llmd_kserve.bench.llmd_br import write_benchmark_reports  # noqa: E402
from llmd_kserve.bench.progress import RunProgress  # noqa: E402
from llmd_kserve.bench.report import build_report, run_entry_from, write_json  # noqa: E402
from llmd_kserve.bench.runner import sim_context_len, workload_info  # noqa: E402
from llmd_kserve.bench.stats import SLO  # noqa: E402
from llmd_kserve.bench.workloads import (  # noqa: E402
    ArrivalSpec,
    TraceSpec,
    build_requests,
    describe_trace,
    fit_summary,
    load_trace,
    parse_window,
)
from llmd_kserve.errors import LlmdError  # noqa: E402

HERE = Path(__file__).resolve().parent
EXCERPTS = sorted((HERE / "traces").glob("*.jsonl"))
COLUMNS = ("trace", "config", "mode", "time scale", "n", "clipped", "errors", "TTFT p50 ms", "TTFT p90 ms",
           "TTFT p99 ms", "TPOT p50 ms", "TPOT p90 ms", "TPOT p99 ms", "in SLO", "goodput/s", "hit rate", "bound")
KNEE_COLUMNS = ("trace", "config", "max compression", "time scale", "TTFT p90 ms there", "hit rate there", "runs")


def _sim(spec: TraceSpec, config: str, a: argparse.Namespace, slo: SLO, progress: RunProgress) -> dict[str, Any]:
    from llmd_kserve.cluster_sim import run_bench

    roles = ("prefill",) * a.prefill + ("decode",) * a.decode if a.prefill else None
    return run_bench(workload=spec, arrivals=[ArrivalSpec(pattern="trace")], seed=a.seed, engines=a.engines,
                     config=config, policy_label=config, progress=progress, slo=slo, roles=roles)[0]


def _live(spec: TraceSpec, config: str, target: str, seed: int, timeout: float, slo: SLO) -> dict[str, Any]:
    import random

    from llmd_kserve.aio import run
    from llmd_kserve.bench.loadgen import LoadConfig, run_load

    arrival = ArrivalSpec(pattern="trace")
    requests = build_requests(spec, random.Random(seed))
    result = run(run_load(requests, arrival, LoadConfig(target=target, timeout_s=timeout)))
    return run_entry_from(result, config, slo, scale="live")


def _row(trace: str, run: dict[str, Any], time_scale: float, clipped: int, bound: float | None) -> list[str]:
    s = run["summary"]

    def ms(key: str) -> str:
        return "–" if s.get(key) is None else f"{s[key] * 1000:.1f}"

    def pct(v: float | None) -> str:
        return "–" if v is None else f"{v:.1%}"

    good = s.get("goodput_rps")
    return [trace, run["policy"], run.get("scale", ""), f"{time_scale:g}", str(s["n"]), str(clipped), str(s["errors"]),
            ms("ttft_p50"), ms("ttft_p90"), ms("ttft_p99"), ms("tpot_p50"), ms("tpot_p90"), ms("tpot_p99"),
            pct(s.get("slo_attainment")), "–" if good is None else f"{good:.2f}", pct(s.get("cache_hit_rate")),
            pct(bound)]


def markdown(rows: list[list[str]], columns: tuple[str, ...] = COLUMNS) -> str:
    """The table in Markdown."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def knee_row(trace: str, config: str, runs: dict[float, dict[str, Any]], attainment: float) -> list[str]:
    """One row of the compression table from a config's runs of one trace, keyed by time scale."""
    k = knee({ts: sustains(r["summary"], attainment) for ts, r in runs.items()})
    there = runs[k.best]["summary"] if k.best is not None else {}
    p90, hit = there.get("ttft_p90"), there.get("cache_hit_rate")
    return [trace, config, k.text(), "–" if k.best is None else f"{k.best:g}",
            "–" if p90 is None else f"{p90 * 1000:.0f}", "–" if hit is None else f"{hit:.1%}", str(len(runs))]


def _check(a: argparse.Namespace, ap: argparse.ArgumentParser, configs: list[str]) -> list[float]:
    if a.live is not None and a.live < 1:
        ap.error("--live N needs at least one engine")
    if a.target and len(configs) != 1:
        ap.error("--target runs the router as it is: name the one config it runs with --configs")
    if (a.prefill or a.decode) and not ((a.sim or a.live) and a.prefill > 0 and a.decode > 0):
        ap.error("--prefill and --decode go together, each at least 1, with --sim or --live")
    if a.live and a.prefill and a.live != a.prefill + a.decode:
        ap.error(f"--live {a.live} starts {a.live} engines: --prefill and --decode must add up to it")
    for c in configs:
        if c.startswith("pd-") and not a.prefill:
            ap.error(f"{c} routes a prefill/decode cluster: give --prefill N --decode M (with --sim or --live)")
        if peer_policy(c) and not a.live:
            ap.error(f"{c} is vLLM's router: it runs only with --live N")
        if peer_policy(c) and a.prefill:
            ap.error(f"{c} is vLLM's router: it runs on aggregated engines only (no --prefill/--decode)")
    try:
        return parse_scales(a.time_scales) if a.time_scales else [a.time_scale]
    except ValueError as exc:
        ap.error(str(exc))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trace", action="append", type=Path, help="trace file (repeat; default: the shipped excerpts)")
    ap.add_argument("--configs", default="round-robin,load-only,precise-prefix,default", help="router configs")
    where = ap.add_mutually_exclusive_group(required=True)
    where.add_argument("--sim", action="store_true", help="replay in the cluster simulator")
    where.add_argument("--live", type=int, default=None, metavar="N",
                       help="replay live on a fresh local stack of N simulated engines per run")
    where.add_argument("--target", default=None, help="replay live against this router URL (one config)")
    ap.add_argument("--engines", type=int, default=8, help="simulated engines (--sim)")
    ap.add_argument("--prefill", type=int, default=0, help="prefill engines of a P/D cluster (with --decode)")
    ap.add_argument("--decode", type=int, default=0, help="decode engines of a P/D cluster (with --prefill)")
    scales = ap.add_mutually_exclusive_group()
    scales.add_argument("--time-scale", type=float, default=1.0, help="multiply the recorded gaps (0.1: 10x faster)")
    scales.add_argument("--time-scales", default=None, metavar="X,Y,...", help="a sweep of time scales")
    ap.add_argument("--refine", type=int, default=0, metavar="N", help="up to N more runs per config near the knee")
    ap.add_argument("--all-scales", action="store_true",
                    help="run every scale of the sweep (default: stop a config at its first failing scale)")
    ap.add_argument("--slo-ttft", type=float, default=2.0, help="SLO on TTFT, seconds")
    ap.add_argument("--slo-tpot", type=float, default=0.05, help="SLO on TPOT, seconds")
    ap.add_argument("--attainment", type=float, default=DEFAULT_ATTAINMENT,
                    help="share of requests within the SLO for a run to sustain its load")
    ap.add_argument("--window", default=None, metavar="START:END", help="seconds of each trace to replay")
    ap.add_argument("--max-requests", type=int, default=None, help="at most this many requests per trace")
    ap.add_argument("--max-model-len", type=int, default=None, help="context to fit (default: the engines')")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=600.0, help="live: per-request timeout, seconds")
    ap.add_argument("--vllm-router", default=None, metavar="PATH", help="vllm-router executable (default: on PATH)")
    ap.add_argument("--json", type=Path, default=None, help="write every run (bench JSON schema) here")
    ap.add_argument("--br-dir", type=Path, default=None, help="write one Benchmark Report v0.2.1 per run here")
    ap.add_argument("--no-progress", action="store_true")
    a = ap.parse_args(argv)
    configs = [c.strip() for c in a.configs.split(",") if c.strip()]
    time_scales = _check(a, ap, configs)
    slo = SLO(ttft=a.slo_ttft, tpot=a.slo_tpot)
    traces = a.trace or EXCERPTS
    context = a.max_model_len or (sim_context_len() if a.sim or a.live else None)
    mode = "sim" if a.sim else "live"
    rows: list[list[str]] = []
    knees: list[list[str]] = []
    kept: list[tuple[TraceSpec, dict[str, Any]]] = []
    try:
        for path in traces:
            base = load_trace(path, window=parse_window(a.window) if a.window else None,
                              max_requests=a.max_requests, max_model_len=context)
            stats, fit = describe_trace(base), fit_summary(base)
            print(f"{path.name}: {len(base.entries)} requests over {stats.span_s:.0f} s; {fit.line()}",
                  file=sys.stderr, flush=True)
            for config in configs:
                runs: dict[float, dict[str, Any]] = {}
                todo = list(time_scales)
                while todo:
                    ts = todo.pop(0)
                    spec = base.model_copy(update={"time_scale": ts})
                    t0 = time.perf_counter()
                    if a.sim:
                        with RunProgress(not a.no_progress) as bar:
                            run = _sim(spec, config, a, slo, bar)
                    elif a.live:
                        run = run_live_stack(spec, config, a.live, a.seed, a.timeout, slo, a.vllm_router,
                                             not a.no_progress, a.prefill, a.decode)
                    else:
                        run = _live(spec, config, a.target, a.seed, a.timeout, slo)
                    run |= {"trace": path.name, "time_scale": ts}
                    runs[ts] = run
                    s = run["summary"]
                    ok = "sustained" if sustains(s, a.attainment) else "not sustained"
                    print(f"  {config} x{1 / ts:.3g} (time scale {ts:g}): {s['n']} requests in "
                          f"{time.perf_counter() - t0:.0f} s, {s.get('slo_attainment') or 0:.1%} within the SLO: {ok}",
                          file=sys.stderr, flush=True)
                    rows.append(_row(path.name, run, ts, fit.clipped, stats.prefix_hit_bound))
                    if not sustains(s, a.attainment) and not a.all_scales:  # faster scales cannot move the knee
                        todo = [t for t in todo if t > ts]
                    if a.json or a.br_dir:
                        kept.append((spec, run))
                        _write(a, kept, rows, knees, mode)
                    if not todo and a.refine > sum(t not in time_scales for t in runs):
                        nxt = next_scale({t: sustains(r["summary"], a.attainment) for t, r in runs.items()})
                        todo += [] if nxt is None or nxt in runs else [nxt]
                    if not (a.json or a.br_dir):
                        run.pop("requests", None)  # a long sweep keeps only the summaries in memory
                knees.append(knee_row(path.name, config, runs, a.attainment))
    except LlmdError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(markdown(rows))
    print(f"\nHighest sustained compression (at least {a.attainment:.0%} of requests with TTFT <= {a.slo_ttft:g} s "
          f"and TPOT <= {a.slo_tpot * 1000:g} ms):\n")
    print(markdown(knees, KNEE_COLUMNS))
    if a.json or a.br_dir:
        _write(a, kept, rows, knees, mode)
    return 0


def _write(a: argparse.Namespace, kept: list[tuple[TraceSpec, dict[str, Any]]], rows: list[list[str]],
           knees: list[list[str]], mode: str) -> None:
    """The JSON and Benchmark Reports of every run so far (rewritten after each run: a long sweep keeps its
    finished runs if it stops)."""
    engines = (a.prefill + a.decode or a.engines) if a.sim else (a.live or None)
    pd = {"prefill": a.prefill, "decode": a.decode} if a.prefill else {}
    docs = [build_report(workload_info(spec, [ArrivalSpec(pattern="trace")], mode=mode, engines=engines,
                                       seed=a.seed, slo={"ttft": a.slo_ttft, "tpot": a.slo_tpot}, **pd), [run])
            for spec, run in kept]
    if a.json:
        write_json({"table": [dict(zip(COLUMNS, r, strict=True)) for r in rows],
                    "compression": [dict(zip(KNEE_COLUMNS, r, strict=True)) for r in knees], "reports": docs}, a.json)
    if a.br_dir:
        a.br_dir.mkdir(parents=True, exist_ok=True)
        for doc in docs:
            run = doc["runs"][0]
            name = f"{Path(run['trace']).stem}.{run['policy'].replace(':', '-')}.ts{run['time_scale']:g}.br.json"
            write_benchmark_reports(doc, a.br_dir / name)


if __name__ == "__main__":
    sys.exit(main())
