"""The ``report`` step: several bench JSON documents (benchmark, simulate, confirm) merged into one HTML report and a
Markdown summary table."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llmd_kserve.bench.llmd_br import benchmark_reports
from llmd_kserve.bench.report import build_report, write_json
from llmd_kserve.errors import ConfigError
from llmd_kserve.viz.report_page import write_html


def _load(path: str) -> dict[str, Any]:
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"not a bench JSON document: {exc}", path) from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("runs"), list):
        raise ConfigError("not a bench JSON document (no runs[])", path)
    return doc


def markdown(report: dict[str, Any], title: str = "llmd-kserve pipeline report") -> str:
    """A Markdown table of every run: TTFT p50/p90 and TPOT p50 in ms, goodput/s, SLO attainment, hit rate."""
    lines = [f"# {title}", "", "| run | n | TTFT p50 ms | TTFT p90 ms | TPOT p50 ms | goodput/s | SLO att. | hit rate |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]

    def ms(v: Any) -> str:
        return "–" if v is None else f"{v * 1000:.1f}"

    def num(v: Any, f: str = ".2f") -> str:
        return "–" if v is None else format(v, f)

    for r in report["runs"]:
        s = r["summary"]
        name = " · ".join(str(x) for x in (r.get("policy"), r.get("scale"), r.get("arrival")) if x)
        lines.append(f"| {name} | {s['n']} | {ms(s.get('ttft_p50'))} | {ms(s.get('ttft_p90'))} | "
                     f"{ms(s.get('tpot_p50'))} | {num(s.get('goodput_rps'))} | {num(s.get('slo_attainment'), '.3f')} | "
                     f"{num(s.get('cache_hit_rate'), '.3f')} |")
    return "\n".join(lines) + "\n"


def report(bench_jsons: Sequence[str], html_path: str, markdown_path: str, json_path: str | None = None,
           title: str = "llmd-kserve pipeline report", br_dir: str | None = None) -> dict[str, float]:
    """Merge the runs of ``bench_jsons`` (each run labelled with its source's workload mode) into one report; write
    the HTML page, the Markdown table, (optionally) the merged JSON and, into ``br_dir``, one llm-d Benchmark Report
    v0.2.1 per run (``<source>_<run>.br.json``). Returns ``runs`` and ``best_goodput_rps``."""
    if not bench_jsons:
        raise ConfigError("report needs at least one bench JSON document", "bench_jsons")
    docs = [_load(p) for p in bench_jsons]
    if br_dir:
        Path(br_dir).mkdir(parents=True, exist_ok=True)
        for i, doc in enumerate(docs):
            for j, br in enumerate(benchmark_reports(doc)):
                (Path(br_dir) / f"{i}_{j}.br.json").write_text(json.dumps(br, indent=1))
    runs = [dict(r, source=i) for i, d in enumerate(docs) for r in d["runs"]]
    merged = build_report({"title": title, "sources": [d.get("workload", {}) for d in docs]}, runs)
    write_html(merged, html_path)
    Path(markdown_path).write_text(markdown(merged, title))
    if json_path:
        write_json(merged, json_path)
    return {"runs": float(len(runs)),
            "best_goodput_rps": float(max((r["summary"].get("goodput_rps") or 0.0) for r in runs))}
