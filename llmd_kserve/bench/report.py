"""Benchmark reports from the bench JSON document: JSON file, offline plotly HTML, rich terminal table.

Public API (pure except the ``write_*`` functions)::

    run_entry(policy, summary, requests, **extra) -> dict        one ``runs[]`` item
    run_entry_from(run: loadgen.RunResult, policy, slo, **extra) -> dict
    build_report(workload: dict, runs: list[dict]) -> dict       {"workload": {...}, "runs": [...]}
    cdf(values) -> (xs, ys)                                      empirical CDF
    endpoint_load(requests) -> {endpoint: (times, in_flight)}    step series from per-request start/e2e
    figures(report) -> list[plotly Figure]                       latency CDFs, hit rate, per-endpoint load
    render_html(report) -> str; write_html(report, path)         self-contained (plotly.js inlined, no CDN)
    plotly_available() -> bool; require_plotly(flag)              plotly is optional: the ``report`` extra
    write_json(report, path)
    summary_table(report, title=None) -> rich.table.Table; print_table(report, console=None)

Every function reads only the JSON document (``runs[].summary`` keys from ``stats.summarize``, ``runs[].requests``
records from ``stats.result_to_dict``), so the cluster simulator's runs render the same way as live ones.
"""

from __future__ import annotations

import html
import importlib.util
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from llmd_kserve.bench.stats import SLO, result_to_dict
from llmd_kserve.errors import ConfigError

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from llmd_kserve.bench.loadgen import RunResult

PLOTLY_HINT = "HTML reports need plotly: pip install 'llmd-kserve[report]'"


def plotly_available() -> bool:
    return importlib.util.find_spec("plotly") is not None


def require_plotly(flag: str = "html") -> None:
    """ConfigError at ``flag`` when plotly is not installed (checked before a run, not after it)."""
    if not plotly_available():
        raise ConfigError(PLOTLY_HINT, flag)


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
    """Latency CDFs (TTFT, TPOT, E2E), cache hit rate per run, and per-endpoint load over time for each run."""
    require_plotly()
    import plotly.graph_objects as go

    runs = report.get("runs", [])
    figs = []
    for metric, title in (("ttft", "TTFT"), ("tpot", "TPOT"), ("e2e", "End-to-end latency")):
        fig = go.Figure()
        for run in runs:
            xs, ys = cdf([r[metric] for r in run["requests"] if r.get(metric) is not None])
            fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name=_run_name(run)))
        fig.update_layout(title=f"{title} CDF", xaxis_title=f"{title} (s)", yaxis_title="fraction of requests")
        figs.append(fig)
    names = [_run_name(r) for r in runs]
    hit = go.Figure(go.Bar(x=names, y=[r["summary"].get("cache_hit_rate") or 0.0 for r in runs], name="hit rate"))
    hit.update_layout(title="Prefix-cache hit rate", yaxis_title="cached / prompt tokens", yaxis_range=[0, 1])
    figs.append(hit)
    for run in runs:
        load = endpoint_load(run["requests"])
        if not load:
            continue
        fig = go.Figure()
        for ep, (ts, ys) in load.items():
            fig.add_trace(go.Scatter(x=ts, y=ys, mode="lines", line_shape="hv", name=ep))
        fig.update_layout(title=f"In-flight requests per endpoint — {_run_name(run)}", xaxis_title="time (s)",
                          yaxis_title="in flight")
        figs.append(fig)
    return figs


def render_html(report: Mapping[str, Any]) -> str:
    """One self-contained HTML page: a summary table and the figures (plotly.js inlined once)."""
    body = [f"<h1>llmd-kserve benchmark</h1><pre>{html.escape(json.dumps(report.get('workload', {}), indent=1))}</pre>"]
    cols = _COLUMNS
    rows = "".join("<tr><td>" + html.escape(_run_name(r)) + "</td>" +
                   "".join(f"<td>{_fmt(r['summary'].get(k), unit)}</td>" for k, _, unit in cols) + "</tr>"
                   for r in report.get("runs", []))
    head = "<tr><th>run</th>" + "".join(f"<th>{h}</th>" for _, h, _ in cols) + "</tr>"
    body.append(f"<table border=1 cellpadding=4 style='border-collapse:collapse'>{head}{rows}</table>")
    for i, fig in enumerate(figures(report)):
        body.append(fig.to_html(full_html=False, include_plotlyjs=(i == 0)))
    return "<!DOCTYPE html><html><head><meta charset='utf-8'><title>llmd-kserve bench</title></head><body>" + \
        "\n".join(body) + "</body></html>"


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
