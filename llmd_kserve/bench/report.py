"""Benchmark reports from the bench JSON document: JSON file, offline plotly HTML, rich terminal table.

Public API (pure except the ``write_*`` functions)::

    run_entry(policy, summary, requests, **extra) -> dict        one ``runs[]`` item
    run_entry_from(run: loadgen.RunResult, policy, slo, **extra) -> dict
    build_report(workload: dict, runs: list[dict]) -> dict       {"workload": {...}, "runs": [...]}
    cdf(values) -> (xs, ys)                                      empirical CDF
    endpoint_load(requests) -> {endpoint: (times, in_flight)}    step series from per-request start/e2e
    plotly_available() -> bool; require_plotly(flag)              plotly is optional: the ``report`` extra
    write_json(report, path)
    summary_table(report, title=None) -> rich.table.Table; print_table(report, console=None)

The HTML page and its figures are drawn above this package, in ``llmd_kserve.viz.report_page`` (``write_html``).
Every function reads only the JSON document (``runs[].summary`` keys from ``stats.summarize``, ``runs[].requests``
records from ``stats.result_to_dict``), so the cluster simulator's runs render the same way as live ones.
"""

from __future__ import annotations

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


def run_name(run: Mapping[str, Any]) -> str:
    parts = [str(run.get("policy", "run"))]
    parts += [str(run[k]) for k in ("scale", "arrival") if run.get(k)]
    return " · ".join(parts)


COLUMNS = (("n", "n", ""), ("errors", "err", ""), ("shed_rate", "shed", "%"), ("ttft_p50", "TTFT p50", "ms"),
            ("ttft_p90", "TTFT p90", "ms"), ("ttft_p99", "TTFT p99", "ms"), ("tpot_p50", "TPOT p50", "ms"),
            ("itl_p50", "ITL p50", "ms"), ("e2e_p50", "E2E p50", "s"), ("output_tok_s", "out tok/s", ""),
            ("goodput_rps", "goodput/s", ""), ("cache_hit_rate", "hit rate", "%"))


def fmt(v: Any, unit: str) -> str:
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
    for _, head, _ in COLUMNS:
        table.add_column(head, justify="right")
    for r in report.get("runs", []):
        table.add_row(run_name(r), *(fmt(r["summary"].get(k), unit) for k, _, unit in COLUMNS))
    return table


def print_table(report: Mapping[str, Any], console: Console | None = None) -> None:
    if console is None:
        console = Console()
        if not console.is_terminal:  # piped / CI logs: do not squeeze the table into 80 columns
            console = Console(width=180)
    console.print(summary_table(report))
