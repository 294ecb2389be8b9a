"""`llmd-kserve demo`: six routing policies on one shared-prefix workload under KV pressure, simulated and live.

The workload is inference-perf's shared-prefix shape: many groups of long system prompts (6,000 tokens, like
agent or RAG instructions), a 200-token question each, 128 output tokens. There are more distinct prefixes than
one engine's KV cache holds but fewer than the whole cluster's, so where a request lands decides whether its
prefix is already computed there. Arrivals are Poisson, 10-25% above the rate a cache-blind (round-robin)
cluster sustains (the sweep in benchmarks/RESULTS.md shows the other loads). Each policy (round-robin,
load-only, approx-prefix, precise-prefix, llm-d v1.0's default ``llm-d-optimized-baseline`` and the project
default) runs

* at full scale in the cluster simulator: 8 engines with the H100 profile's full KV cache (26,962 blocks each);
  ``llm-d-optimized-baseline`` there has the simulated H100's ``peakPrefillThroughput`` (``bench.sim_configs``);
* at small scale live over HTTP: 4 simulated engine processes (4,096 KV blocks each) behind the real router
  (`LocalStack`), the same prompt shapes with fewer groups, on freshly reset caches for every policy;
* or, with ``engine="vllm"``, live on 2 real vLLM replicas (``demo_live``) (the CPU build, the tiny random-weights Llama, one core
  and a 16,384-token KV cache each): shorter prompts (1,000 words, about 2,100 of its tokens), fewer requests and a
  lower rate, so that round-robin, approx-prefix, precise-prefix and the default finish in a few minutes on two
  cores. The router keys prompts with the model's own tokenizer.

Results: one table (policy x scale: TTFT p50/p90, TPOT p50, goodput under the SLO, hit rate, shed), the
default-vs-round-robin ratios, a simulated rate sweep (``demo_sweep``: each policy's max rate within the SLO), an HTML report, and optionally the bench JSON (``runs[].policy``,
``runs[].scale``). ``quick=True`` is a reduced version for tests.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from rich.console import Console
from rich.table import Table

from llmd_kserve.bench.report import build_report, require_plotly, write_json
from llmd_kserve.bench.sim_configs import sim_config
from llmd_kserve.bench.stats import SLO
from llmd_kserve.cluster_sim.run import sim_entry, simulate
from llmd_kserve.cluster_sim.sim import SimOptions
from llmd_kserve.defaults import DEFAULT_PROFILE
from llmd_kserve.demo_plan import (
    ENGINE_LABEL,
    POLICIES,
    SLO_DEMO,
    VLLM_POLICIES,
    Scale,
    plan,
    print_progress,
    requests_for,
)
from llmd_kserve.demo_sweep import ATTAINMENT, FACTORS, MATCHED_REQUESTS, matched_load, sweep

log = logging.getLogger(__name__)

def run_sim(scale: Scale, policies: Sequence[str], seed: int = 0, slo: SLO = SLO_DEMO,
            console: Console | None = None, profile: str = DEFAULT_PROFILE) -> list[dict]:
    """Every policy on a fresh simulated cluster; ``runs[]`` items with ``scale="sim"``."""
    arrival, reqs = requests_for(scale, seed)
    runs = []
    for policy in policies:
        t0 = time.perf_counter()
        run = simulate(reqs, sim_config(policy), SimOptions(engines=scale.engines, num_blocks=scale.num_blocks, seed=seed,
                                                profile=profile), arrival)
        runs.append(sim_entry(run, policy, slo, scale="sim", arrival=arrival.label, engines=scale.engines))
        print_progress(console, runs[-1], time.perf_counter() - t0)
    return runs


def ratios(runs: Sequence[dict], scale: str, policy: str = "default", baseline: str = "round-robin") -> dict | None:
    """``policy`` vs ``baseline`` at one scale: TTFT p90 times lower, goodput times higher, shed counts."""
    by = {r["policy"]: r["summary"] for r in runs if r.get("scale") == scale}
    if policy not in by or baseline not in by:
        return None
    p, b = by[policy], by[baseline]
    ttft = b["ttft_p90"] / p["ttft_p90"] if p.get("ttft_p90") and b.get("ttft_p90") else None
    good = p["goodput_rps"] / b["goodput_rps"] if b.get("goodput_rps") else (float("inf") if p.get("goodput_rps")
                                                                             else None)
    shed = int(p.get("shed") or 0) + int(b.get("shed") or 0)
    return {"scale": scale, "ttft_p90_x_lower": ttft, "goodput_x_higher": good, "shed": shed,
            "claim_met": bool(ttft and good and ttft >= 3.0 and good >= 2.0 and shed == 0)}


def table(runs: Sequence[dict]) -> Table:
    t = Table(title=f"llmd-kserve demo: shared-prefix under KV pressure (SLO: TTFT <= {SLO_DEMO.ttft:g} s, "
                    f"TPOT <= {SLO_DEMO.tpot * 1000:g} ms)")
    for col in ("policy", "scale", "engines", "n", "TTFT p50 ms", "TTFT p90 ms", "TPOT p50 ms", "goodput/s",
                "offered/s", "hit rate", "shed"):
        t.add_column(col, justify="left" if col in ("policy", "scale") else "right")
    for r in runs:
        s = r["summary"]
        offered = r.get("offered_rps")
        scale = r["scale"] + (" · vLLM" if r.get("engine") == "vllm" else "")
        t.add_row(r["policy"], scale, str(r.get("engines", "")), str(s["n"]), _ms(s["ttft_p50"]),
                  _ms(s["ttft_p90"]), _ms(s["tpot_p50"]), _num(s["goodput_rps"]), _num(offered),
                  _pct(s["cache_hit_rate"]), str(s["shed"]))
    return t


def _ms(v: float | None) -> str:
    return "–" if v is None else f"{v * 1000:.1f}"


def _num(v: float | None) -> str:
    return "–" if v is None else f"{v:.1f}"


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{v * 100:.1f}%"


def run_demo(*, quick: bool = False, json: str | None = None, html: str | None = "llmd-demo.html",
             live: bool = True, sim: bool = True, policies: Sequence[str] | None = None, seed: int = 0,
             engine: str = "sim", vllm_python: str | None = None, console: Console | None = None,
             profile: str = DEFAULT_PROFILE) -> dict:
    """Run the demo, print the table and ratios, write the reports; returns the bench JSON document.

    ``engine="vllm"``: the live phase on real vLLM replicas (see :func:`plan`), the policies of
    :data:`VLLM_POLICIES` unless ``policies`` are given; the simulated phase is unchanged. ``profile``: the
    simulated engines' latency profile (the scales are sized for the default, ``h100-llama8b``)."""
    if html:
        require_plotly("html")  # before minutes of runs, not after them
    sim_scale, live_scale = plan(quick, engine)
    from llmd_kserve import demo_live

    if live and engine == "vllm":  # a missing vLLM environment fails here, naming the install command
        from llmd_kserve.vllm_env import find_vllm_env

        vllm_python = str(find_vllm_env(python=vllm_python).python)
    if console is None:
        console = Console()
        if not console.is_terminal:  # piped / CI logs: do not squeeze the table
            console = Console(width=140)
    sim_policies = tuple(policies or POLICIES)
    live_policies = tuple(policies or (VLLM_POLICIES if engine == "vllm" else POLICIES))
    t0 = time.perf_counter()
    runs: list[dict] = []
    if sim:
        console.print(f"[bold]cluster simulator[/bold]: {sim_scale.engines} engines, {sim_scale.num_requests} "
                      f"requests at {sim_scale.rate:g} req/s")
        runs += [dict(r, offered_rps=sim_scale.rate, engine="sim")
                 for r in run_sim(sim_scale, sim_policies, seed, console=console, profile=profile)]
    if live:
        what = (f"real vLLM replicas ({ENGINE_LABEL['vllm']}, {live_scale.kv_cache_tokens:,}-token KV cache each)"
                if engine == "vllm" else "simulated engine processes")
        console.print(f"[bold]live over HTTP[/bold]: {live_scale.engines} {what} + router, "
                      f"{live_scale.num_requests} requests at {live_scale.rate:g} req/s per policy")
        runs += [dict(r, offered_rps=live_scale.rate)
                 for r in demo_live.run_live(live_scale, live_policies, seed, console=console, vllm_python=vllm_python,
                                             profile=profile)]
    rate_sweep: list[dict] = []
    if sim:
        console.print(f"[bold]rate sweep[/bold] (simulator): {', '.join(f'{f:g}x' for f in FACTORS)} of "
                      f"{sim_scale.rate:g} req/s, {sweep_requests(sim_scale)} requests per run")
        rate_sweep = sweep(sim_scale.workload, sim_scale.engines, sim_scale.num_blocks, sim_scale.rate,
                           sim_policies, num_requests=sweep_requests(sim_scale), slo=SLO_DEMO, seed=seed,
                           profile=profile)
    matched = (matched_load(sim_scale.workload, sim_scale.engines, sim_scale.num_blocks, rate_sweep,
                            sim_policies, num_requests=sweep_requests(sim_scale) if quick else MATCHED_REQUESTS, slo=SLO_DEMO,
                            seed=seed, profile=profile) if rate_sweep else None)
    claims = [c for scale in ("sim", "live") if (c := ratios(runs, scale)) is not None]
    for c in claims:  # the claim is stated for simulated H100 engines; on vLLM CPU the ratios are measurements
        c["engine"] = "sim" if c["scale"] == "sim" else live_scale.engine
        c["claim_applies"] = c["engine"] == "sim"
    info = {"demo": "shared-prefix under KV pressure", "quick": quick, "seed": seed,
            "slo": {"ttft": SLO_DEMO.ttft, "tpot": SLO_DEMO.tpot}, "machine": "2-core CPU sandbox",
            "profile": profile, "scales": {s.name: s.info() for s in (sim_scale, live_scale)},
            "engines": {"sim": "sim", "live": live_scale.engine}, "claims": claims, "rate_sweep": rate_sweep, "matched_load": matched, "elapsed_s": None}
    report = build_report(info, runs)
    console.print(table(runs))
    for c in claims:
        mark = "[green]met[/green]" if c["claim_met"] else "[red]not met[/red]"
        where = c["scale"] + (f" ({ENGINE_LABEL[c['engine']]})" if c["engine"] != "sim" else "")
        claim = (f"(claim >= 3x / >= 2x: {mark})" if c["claim_applies"]
                 else "(measured; the claim is stated for simulated H100 engines)")
        console.print(f"{where}: default vs round-robin: TTFT p90 {_x(c['ttft_p90_x_lower'])} lower, "
                      f"goodput {_x(c['goodput_x_higher'])} higher, {c['shed']} shed  {claim}")
    if rate_sweep:
        console.print(sweep_table(rate_sweep))
    if matched:
        pts = matched["points"]
        rr, dflt = pts.get("round-robin", {}).get("ttft_p90"), pts.get("default", {}).get("ttft_p90")
        console.print(f"matched load (0.8 x round-robin's max rate in SLO = {matched['rate']:g} req/s, "
                      f"{matched['requests']} requests): TTFT p90 "
                      + ", ".join(f"{p} {_ms(v['ttft_p90'])} ms" for p, v in pts.items())
                      + (f"; default {_x(rr / dflt)} lower than round-robin" if rr and dflt else ""))
    report["workload"]["elapsed_s"] = round(time.perf_counter() - t0, 1)
    if json:
        write_json(report, json)
        console.print(f"JSON: {json}")
    if html:
        from llmd_kserve.viz.report_page import write_html

        write_html(report, html)
        console.print(f"HTML report: {html}")
    console.print(f"demo took {report['workload']['elapsed_s']:.0f} s")
    return report


def sweep_requests(scale: Scale) -> int:
    """Requests per sweep run: a third of the demo's, at least 600 (enough for queues to build past saturation)."""
    return max(600, scale.num_requests // 3)


def sweep_table(rows: Sequence[dict]) -> Table:
    """Policy x offered rate: TTFT p90 ms / SLO attainment, and the max rate within the SLO."""
    t = Table(title=f"rate sweep (simulator): TTFT p90 ms / share within the SLO; max rate where >= "
                    f"{ATTAINMENT:.0%} meet it")
    rates = [p["rate"] for p in rows[0]["points"]] if rows else []
    for col in ("policy", *(f"{r:g}/s" for r in rates), "max rate in SLO"):
        t.add_column(col, justify="left" if col == "policy" else "right")
    for row in rows:
        t.add_row(row["policy"], *(f"{_ms(p['ttft_p90'])} / {_pct(p['slo_attainment'])}" for p in row["points"]),
                  f"{row['max_rate_in_slo']:g}/s")
    return t


def _x(v: float | None) -> str:
    return "–" if v is None else ("inf" if v == float("inf") else f"{v:.1f}x")
