"""How a plan is shown: the plan with its margin, and the options table (rich), or JSON."""

from __future__ import annotations

import json

from rich.console import Console
from rich.table import Table

from llmd_kserve.plan.planner import Plan
from llmd_kserve.plan.search import Evaluation


def _ms(v: float | None) -> str:
    return "–" if v is None else f"{v * 1000:.0f}"


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{v * 100:.1f}%"


def _attain(e: Evaluation) -> str:
    """Its attainment; ``< x%`` for a run stopped once it could not meet the SLO."""
    return f"< {_pct(e.attainment)}" if e.stopped_early else _pct(e.attainment)


def summary_lines(p: Plan) -> list[str]:
    """The plan in a few lines: the deployment, its GPUs, its margin against the SLO and its headroom."""
    b = p.best
    d = b.deployment
    form = f"P/D {d.ratio} ({d.prefill} prefill + {d.decode} decode)" if d.prefill else f"aggregated, {d.shape}"
    lines = [f"plan for {p.workload} at {p.rate:g} req/s: {form}, router config {d.config}, "
             f"{b.gpus:g} GPUs ({p.profile})"]
    slo = []
    if p.slo.ttft is not None:
        slo.append(f"TTFT p90 {_ms(b.ttft_p90)} ms vs target {_ms(p.slo.ttft)} ms")
    if p.slo.tpot is not None:
        slo.append(f"TPOT p90 {_ms(b.tpot_p90)} ms vs target {_ms(p.slo.tpot)} ms")
    lines.append(f"  SLO attainment {_pct(b.attainment)} (target {_pct(p.attainment_target)}, worst of seeds "
                 f"{', '.join(map(str, b.seeds))}); " + "; ".join(slo))
    if p.headroom_rate is not None:
        lines.append(f"  headroom: meets the SLO up to {p.headroom_rate:g} req/s ({p.headroom_rate / p.rate:.2f}x "
                     f"the target)")
    lines.append(f"  {len(p.evaluations)} deployments simulated at the target rate in {p.wall_s:.0f} s")
    return lines


def options_table(p: Plan, limit: int = 8) -> Table:
    """The best deployment of each form (config x P:D ratio), cheapest first, the plan marked."""
    t = Table(title="options (best of each form)", title_justify="left")
    for col in ("", "form", "config", "replicas", "GPUs", "attainment", "TTFT p90 ms", "TPOT p90 ms", "hit rate"):
        t.add_column(col, justify="left" if col in ("", "form", "config") else "right")
    for e in p.options[:limit]:
        d = e.deployment
        mark = "plan" if e == p.best else ""
        t.add_row(mark, f"P/D {d.ratio}" if d.prefill else "aggregated", d.config, d.shape, f"{e.gpus:g}",
                  _attain(e), _ms(e.ttft_p90), _ms(e.tpot_p90), _pct(e.cache_hit_rate))
    return t


def print_plan(p: Plan, console: Console | None = None) -> None:
    console = console or Console(width=None if Console().is_terminal else 120)
    for line in summary_lines(p):
        console.print(line, highlight=False)
    console.print(options_table(p))


def evaluation_line(e: Evaluation) -> str:
    """One simulated deployment, as the CLI reports it while searching."""
    verdict = "meets" if e.meets else "misses"
    return (f"  {e.deployment.label:34s} @ {e.rate:g}/s: {verdict} the SLO, attainment {_pct(e.attainment)}, "
            f"TTFT p90 {_ms(e.ttft_p90)} ms")


def to_json_text(p: Plan) -> str:
    return json.dumps(p.to_json(), indent=1)
