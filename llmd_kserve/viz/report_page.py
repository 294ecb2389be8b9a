"""The offline HTML report of a bench JSON document: the claim and the charts first, the run's settings folded.

    headline(report) -> list[str]        one sentence per claim (the demo's ratios) or per policy
    report_figures(report) -> list[Figure]   the figures of ``viz.figures`` a report needs, in reading order
    render_page(report, title=None) -> str   one self-contained page; plotly.js embedded once, no CDN
    render_html(report) -> str; write_html(report, path)   that page with the summary table (``bench --html``, demo)
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import plotly.graph_objects as go

from llmd_kserve.bench.report import COLUMNS, endpoint_load, fmt, run_name
from llmd_kserve.viz import figures
from llmd_kserve.viz.data import RunPoint, by_policy, run_points
from llmd_kserve.viz.sources.bench import latencies_by_run


def _ms(v: float | None) -> str:
    return "–" if v is None else f"{v * 1000:,.1f} ms"


def _x(v: float | None) -> str:
    return "–" if v is None else ("∞" if v == float("inf") else f"{v:.1f}×")


def headline(report: Mapping[str, Any]) -> list[str]:
    """The report's claim in sentences: the demo's default-vs-round-robin ratios when present, else each
    policy's best run (TTFT p90, goodput, hit rate)."""
    claims = (report.get("workload") or {}).get("claims") or []
    if claims:
        return [f"{c['scale']}{' (vLLM)' if c.get('engine') == 'vllm' else ''}: default vs round-robin — TTFT p90 "
                f"{_x(c.get('ttft_p90_x_lower'))} lower, goodput {_x(c.get('goodput_x_higher'))} higher, "
                f"{c.get('shed', 0)} shed ("
                + ("measured" if c.get("claim_applies") is False else
                   "claim met" if c.get("claim_met") else "claim not met") + ")" for c in claims]
    out = []
    for label, runs in by_policy(run_points(report)).items():
        best = max(runs, key=lambda p: p.goodput_rps or 0.0)
        rate = f" at {best.rate:g} req/s" if best.rate is not None else ""
        hit = "–" if best.hit_rate is None else f"{best.hit_rate * 100:.0f}%"
        out.append(f"{label}{rate}: TTFT p90 {_ms(best.ttft.p90)}, goodput {best.goodput_rps or 0:.1f} req/s "
                   f"within SLO, hit rate {hit}, {best.errors} errors of {best.n}")
    return out


def report_figures(report: Mapping[str, Any]) -> list[go.Figure]:
    points: Sequence[RunPoint] = run_points(report)
    figs = [figures.latency_vs_rate(points, "ttft"), figures.goodput_vs_rate(points),
            figures.latency_vs_rate(points, "tpot"), figures.throughput_vs_rate(points)]
    if len({p.rate for p in points}) > 1:
        figs.append(figures.pareto(points))
    figs.append(figures.hit_rate_by_run(points))
    for metric, name in (("ttft", "TTFT"), ("tpot", "TPOT"), ("e2e", "End-to-end latency")):
        figs.append(figures.latency_cdf(latencies_by_run(report, metric), name))
    for run, point in zip(report.get("runs", []), points, strict=True):
        load = endpoint_load(run.get("requests", []))
        if load:
            figs.append(figures.endpoint_load(load, point.label + (f" @{point.rate:g}/s" if point.rate else "")))
    return figs


_STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}
.claim{font-size:1.15em;background:#f3f7ff;border-left:4px solid #1f77b4;padding:.6em 1em}
table{border-collapse:collapse;font-size:.9em}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
td:first-child,th:first-child{text-align:left}details{margin:1.5em 0}summary{cursor:pointer;font-weight:600}"""


def render_page(report: Mapping[str, Any], title: str | None = None, table_html: str = "") -> str:
    """One self-contained page: headline, charts, the summary table, then the settings in a folded section."""
    title = title or ("llmd-kserve demo" if (report.get("workload") or {}).get("demo") else "llmd-kserve benchmark")
    claim = "".join(f"<li>{html.escape(s)}</li>" for s in headline(report))
    charts = [fig.to_html(full_html=False, include_plotlyjs=(i == 0), config={"displaylogo": False})
              for i, fig in enumerate(report_figures(report))]
    settings = html.escape(json.dumps(report.get("workload", {}), indent=1, default=str))
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
            f"<ul class='claim'>{claim}</ul>" + "\n".join(charts) +
            f"<h2>Summary</h2>{table_html}"
            f"<details><summary>Settings of this run (workload, arrivals, SLO, scales)</summary><pre>{settings}</pre>"
            "</details></body></html>")


def render_html(report: Mapping[str, Any]) -> str:
    """:func:`render_page` with the summary table of every run."""
    rows = "".join("<tr><td>" + html.escape(run_name(r)) + "</td>" +
                   "".join(f"<td>{fmt(r['summary'].get(k), unit)}</td>" for k, _, unit in COLUMNS) + "</tr>"
                   for r in report.get("runs", []))
    head = "<tr><th>run</th>" + "".join(f"<th>{h}</th>" for _, h, _ in COLUMNS) + "</tr>"
    return render_page(report, table_html=f"<table>{head}{rows}</table>")


def write_html(report: Mapping[str, Any], path: str | Path) -> None:
    Path(path).write_text(render_html(report), encoding="utf-8")
