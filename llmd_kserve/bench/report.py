"""Benchmark reports from the bench JSON document: JSON file, offline plotly HTML, rich terminal table.

Public API (pure except the ``write_*`` functions)::

    run_entry(policy, summary, requests, **extra) -> dict        one ``runs[]`` item
    run_entry_from(run: loadgen.RunResult, policy, slo, **extra) -> dict
    build_report(workload: dict, runs: list[dict]) -> dict       {"workload": {...}, "runs": [...]}
    cdf(values) -> (xs, ys)                                      empirical CDF
    endpoint_load(requests) -> {endpoint: (times, in_flight)}    step series from per-request start/e2e
    figures(report) -> list[plotly Figure]                       ``viz.report_page.report_figures``
    render_html(report) -> str; write_html(report, path)         self-contained (plotly.js inlined once, no CDN):
                                                                 the claim and charts first, settings folded
    write_json(report, path)
    summary_table(report, title=None) -> rich.table.Table; print_table(report, console=None)

Every function reads only the JSON document (``runs[].summary`` keys from ``stats.summarize``, ``runs[].requests``
records from ``stats.result_to_dict``), so the cluster simulator's runs render the same way as live ones.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from llmd_kserve.bench.stats import SLO, result_to_dict

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from llmd_kserve.bench.loadgen import RunResult


def run_entry(policy: str, summary: Mapping[str, Any], requests: Sequence[Mapping[str, Any]], **extra: Any) -> dict:
    return {"policy": policy, **extra, "summary": dict(summary), "requests": [dict(r) for r in requests]}


def run_entry_from(run: RunResult, policy: str, slo: SLO | None = None, **extra: Any) -> dict:
    """A ``runs[]`` item from a live load-generator run."""
    return run_entry(policy, run.summary(slo), [result_to_dict(r) for r in run.results], arrival=run.label,
                     engine_counters=dict(run.engine_counters), **extra)


def build_report(workload: Mapping[str, Any], runs: Sequence[Mapping[str, Any]]) -> dict:
    return {"workload": dict(workload), "runs": [dict(r) for r in runs]}


def write_json(report: Mapping[str, Any], path: str | Path) -> None:
    Path(path).write_text(json.dumps(report, indent=1, default=str))


def cdf(values: Sequence[float]) -> tuple[list[float], list[float]]:
    xs = sorted(values)
    n = len(xs)
    return xs, [(i + 1) / n for i in range(n)]


def endpoint_load(requests: Sequence[Mapping[str, Any]]) -> dict[str, tuple[list[float], list[int]]]:
    """In-flight requests per endpoint over time (seconds since the run began), as step series."""
    events: dict[str, list[tuple[float, int]]] = {}
    for r in requests:
        if r.get("endpoint") and r.get("e2e") is not None:
            ev = events.setdefault(r["endpoint"], [])
            ev += [(r["start"], 1), (r["start"] + r["e2e"], -1)]
    out = {}
    for ep, ev in sorted(events.items()):
        ev.sort(key=lambda e: (e[0], e[1]))
        level, ts, ys = 0, [0.0], [0]
        for t, d in ev:
            level += d
            ts.append(t)
            ys.append(level)
        out[ep] = (ts, ys)
    return out


def _run_name(run: Mapping[str, Any]) -> str:
    parts = [str(run.get("policy", "run"))]
    parts += [str(run[k]) for k in ("scale", "arrival") if run.get(k)]
    return " · ".join(parts)


def figures(report: Mapping[str, Any]) -> list[go.Figure]:
    """The report's figures (``llmd_kserve.viz.figures``): latency and goodput by rate or policy, CDFs, hit rate,
    per-endpoint load."""
    from llmd_kserve.viz.report_page import report_figures

    return report_figures(report)


def render_html(report: Mapping[str, Any]) -> str:
    """One self-contained HTML page: the claim and the charts first, the summary table, the settings folded."""
    from llmd_kserve.viz.report_page import render_page

    cols = _COLUMNS
    rows = "".join("<tr><td>" + html.escape(_run_name(r)) + "</td>" +
                   "".join(f"<td>{_fmt(r['summary'].get(k), unit)}</td>" for k, _, unit in cols) + "</tr>"
                   for r in report.get("runs", []))
    head = "<tr><th>run</th>" + "".join(f"<th>{h}</th>" for _, h, _ in cols) + "</tr>"
    return render_page(report, table_html=f"<table>{head}{rows}</table>")


def write_html(report: Mapping[str, Any], path: str | Path) -> None:
    Path(path).write_text(render_html(report), encoding="utf-8")


_COLUMNS = (("n", "n", ""), ("errors", "err", ""), ("shed_rate", "shed", "%"), ("ttft_p50", "TTFT p50", "ms"),
            ("ttft_p90", "TTFT p90", "ms"), ("ttft_p99", "TTFT p99", "ms"), ("tpot_p50", "TPOT p50", "ms"),
            ("itl_p50", "ITL p50", "ms"), ("e2e_p50", "E2E p50", "s"), ("output_tok_s", "out tok/s", ""),
            ("goodput_rps", "goodput/s", ""), ("cache_hit_rate", "hit rate", "%"))


def _fmt(v: Any, unit: str) -> str:
    if v is None:
        return "–"
    if unit == "ms":
        return f"{v * 1000:.1f}"
    if unit == "%":
        return f"{v * 100:.1f}%"
    if isinstance(v, float):
        return f"{v:.2f}"
    return str(v)


def summary_table(report: Mapping[str, Any], title: str | None = None) -> Table:
    table = Table(title=title or "benchmark summary (latencies in ms unless noted)")
    table.add_column("run")
    for _, head, _ in _COLUMNS:
        table.add_column(head, justify="right")
    for r in report.get("runs", []):
        table.add_row(_run_name(r), *(_fmt(r["summary"].get(k), unit) for k, _, unit in _COLUMNS))
    return table


def print_table(report: Mapping[str, Any], console: Console | None = None) -> None:
    if console is None:
        console = Console()
        if not console.is_terminal:  # piped / CI logs: do not squeeze the table into 80 columns
            console = Console(width=180)
    console.print(summary_table(report))
