"""`llmd-kserve demo`: five routing policies on one shared-prefix workload under KV pressure, simulated and live.

The workload is inference-perf's shared-prefix shape: many groups of long system prompts (6,000 tokens, like
agent or RAG instructions), a 200-token question each, 128 output tokens. There are more distinct prefixes than
one engine's KV cache holds but fewer than the whole cluster's, so where a request lands decides whether its
prefix is already computed there. Arrivals are Poisson, 10-25% above the rate a cache-blind (round-robin)
cluster sustains (the sweep in benchmarks/RESULTS.md shows the other loads). Each policy (round-robin,
load-only, approx-prefix, precise-prefix and the project default) runs

* at full scale in the cluster simulator: 8 engines with the H100 profile's full KV cache (26,962 blocks each);
* at small scale live over HTTP: 4 simulated engine processes (4,096 KV blocks each) behind the real router
  (`LocalStack`), the same prompt shapes with fewer groups, on freshly reset caches for every policy;
* or, with ``engine="vllm"``, live on 2 real vLLM replicas (the CPU build, the tiny random-weights Llama, one core
  and a 16,384-token KV cache each): shorter prompts (1,000 words, about 2,100 of its tokens), fewer requests and a
  lower rate, so that round-robin, approx-prefix, precise-prefix and the default finish in a few minutes on two
  cores. The router keys prompts with the model's own tokenizer.

Results: one table (policy x scale: TTFT p50/p90, TPOT p50, goodput under the SLO, hit rate, shed), the
default-vs-round-robin ratios, a simulated rate sweep (``demo_sweep``: each policy's max rate within the SLO), an HTML report, and optionally the bench JSON (``runs[].policy``,
``runs[].scale``). ``quick=True`` is a reduced version for tests.
"""

from __future__ import annotations

import asyncio
import json as json_lib
import logging
import random
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.table import Table

from llmd_kserve.bench.report import build_report, require_plotly, run_entry_from, write_json
from llmd_kserve.bench.stats import SLO
from llmd_kserve.bench.workloads import ArrivalSpec, SharedPrefixSpec, make_workload
from llmd_kserve.cluster_sim.run import sim_entry, simulate
from llmd_kserve.cluster_sim.sim import SimOptions
from llmd_kserve.defaults import DEFAULT_PROFILE
from llmd_kserve.demo_sweep import ATTAINMENT, FACTORS, MATCHED_REQUESTS, matched_load, sweep
from llmd_kserve.errors import ConfigError

log = logging.getLogger(__name__)

POLICIES = ("round-robin", "load-only", "approx-prefix", "precise-prefix", "default")
VLLM_POLICIES = ("round-robin", "approx-prefix", "precise-prefix", "default")
"""The live phase on real vLLM runs these unless policies are given (each run takes about a minute on 2 cores)."""
ENGINES = ("sim", "vllm")
ENGINE_LABEL = {"sim": "simulated", "vllm": "vLLM 0.32 CPU"}
VLLM_KV_CACHE_TOKENS = 16384
VLLM_LIVE_LOAD = (144, 3.0)
"""Requests and Poisson rate (req/s) of the live phase on real vLLM: about 50 s per policy."""
"""KV cache per vLLM replica in the demo: 512 blocks of 32, about 7 of the workload's 12 prefixes."""
SLO_DEMO = SLO(ttft=0.5, tpot=0.05)
"""Interactive-chat objectives: first token within 0.5 s, then at least 20 tokens/s."""


@dataclass(frozen=True, slots=True)
class Scale:
    """One side of the demo: where it runs, how many engines, the workload and its offered load."""

    name: str  # "sim" | "live"
    engines: int
    num_blocks: int | None
    workload: SharedPrefixSpec
    num_requests: int
    rate: float
    engine: str = "sim"
    """``sim``: simulated engines (in the cluster simulator, or as processes); ``vllm``: real vLLM replicas."""
    kv_cache_tokens: int | None = None
    """``vllm``: KV cache per replica, in the model's tokens."""

    def info(self) -> dict[str, Any]:
        kv: dict[str, Any] = ({"kv_cache_tokens": self.kv_cache_tokens} if self.engine == "vllm"
                              else {"num_blocks": self.num_blocks or "profile (26962)"})
        return {"engine": self.engine, "engines": self.engines, **kv, "workload": self.workload.model_dump(),
                "num_requests": self.num_requests, "arrivals": {"pattern": "poisson", "rate": self.rate}}


def _spec(groups: int, n: int, system: int = 6000, question: int = 200, output: int = 128) -> SharedPrefixSpec:
    return SharedPrefixSpec(num_groups=groups, prompts_per_group=-(-n // groups), system_prompt_len=system,
                            question_len=question, output_len=output)


def plan(quick: bool = False, engine: str = "sim") -> tuple[Scale, Scale]:
    """The sim and live scales. Each offered load is 10-25% above what round-robin sustains in that setup (8 engines:
    ~50 req/s; 4 engines with 4,096 blocks: ~18 req/s) and well below what the default sustains (~90 / ~35 req/s).

    ``engine="vllm"``: the live scale is 2 real vLLM replicas on the tiny model, 12 prefixes of 1,000 words (about
    25,000 of its tokens: more than one replica's 16,384-token cache, less than both), 32 output tokens."""
    if engine not in ENGINES:
        raise ConfigError(f"must be one of {', '.join(ENGINES)}, got {engine!r}", "engine")
    sim = (Scale("sim", 8, 8192, _spec(64, 1000), 1000, 55.0) if quick
           else Scale("sim", 8, None, _spec(192, 4000), 4000, 55.0))
    if engine == "vllm":
        return sim, vllm_live_scale(*((48, 3.0) if quick else VLLM_LIVE_LOAD))
    if quick:
        return sim, Scale("live", 2, 4096, _spec(16, 120), 120, 10.0)
    return sim, Scale("live", 4, 4096, _spec(28, 396), 396, 22.0)


def _requests(scale: Scale, seed: int):  # noqa: ANN202 - list[RequestSpec]
    arrival = ArrivalSpec(pattern="poisson", rate=scale.rate)
    return arrival, make_workload(scale.workload, arrival, random.Random(seed), scale.num_requests)


def vllm_live_scale(num_requests: int, rate: float) -> Scale:
    """The live scale on real vLLM at another load (:func:`plan` uses :data:`VLLM_LIVE_LOAD`)."""
    return Scale("live", 2, None, _spec(12, num_requests, system=1000, question=50, output=32), num_requests, rate,
                 "vllm", VLLM_KV_CACHE_TOKENS)


def run_sim(scale: Scale, policies: Sequence[str], seed: int = 0, slo: SLO = SLO_DEMO,
            console: Console | None = None) -> list[dict]:
    """Every policy on a fresh simulated cluster; ``runs[]`` items with ``scale="sim"``."""
    arrival, reqs = _requests(scale, seed)
    runs = []
    for policy in policies:
        t0 = time.perf_counter()
        run = simulate(reqs, policy, SimOptions(engines=scale.engines, num_blocks=scale.num_blocks, seed=seed),
                       arrival)
        runs.append(sim_entry(run, policy, slo, scale="sim", arrival=arrival.label, engines=scale.engines))
        _progress(console, runs[-1], time.perf_counter() - t0)
    return runs


def run_live(scale: Scale, policies: Sequence[str], seed: int = 0, slo: SLO = SLO_DEMO,
             console: Console | None = None, vllm_python: str | None = None,
             observe: Callable[[Any, str], None] | None = None) -> list[dict]:
    """Every policy live: one LocalStack (engines stay up), the router restarted per policy, caches reset.
    ``scale.engine == "vllm"``: real vLLM replicas of the tiny model (``vllm_python``: the interpreter with vLLM;
    default the nearest ``.venv-vllm``), the router keying prompts with the model's tokenizer. ``observe(stack,
    phase)`` is called once the stack is up (``"started"``), after each policy's run (the policy's name, while its
    router still runs) and at the end (``"done"``)."""
    from llmd_kserve.bench.loadgen import LoadConfig, run_load
    from llmd_kserve.stack import LocalStack

    arrival, reqs = _requests(scale, seed)
    runs: list[dict] = []
    with LocalStack(**stack_options(scale, policies[0], seed, vllm_python)) as stack:
        if observe is not None:
            observe(stack, "started")
        if scale.engine == "vllm":
            _warm_up(stack.engine_base_urls)
        for i, policy in enumerate(policies):
            if i:
                stack.restart_router(policy)
            for url in stack.engine_base_urls:  # every policy starts from cold caches
                _post(f"{url}/reset_prefix_cache", None)
            t0 = time.perf_counter()
            config = LoadConfig(target=stack.router_url, engine_urls=stack.engine_base_urls, progress=False)
            result = asyncio.run(run_load(reqs, arrival, config, run_tag=f"{policy}-"))
            runs.append(dict(run_entry_from(result, policy, slo, scale="live", engines=scale.engines),
                             engine=scale.engine))
            _progress(console, runs[-1], time.perf_counter() - t0)
            if observe is not None:
                observe(stack, policy)
        if observe is not None:
            observe(stack, "done")
    return runs


def stack_options(scale: Scale, config: str, seed: int, vllm_python: str | None) -> dict[str, Any]:
    """LocalStack options for the live phase."""
    options: dict[str, Any] = {"engines": scale.engines, "config": config, "prometheus": False, "seed": seed}
    if scale.engine == "vllm":
        from llmd_kserve.tiny_model import ensure_tiny_model

        model = str(ensure_tiny_model())
        return options | {"engine": "vllm", "model": model, "kv_cache_tokens": scale.kv_cache_tokens,
                          "vllm_python": vllm_python, "router_args": ("--tokenizer", model)}
    return options | {"engine_args": ("--num-blocks", str(scale.num_blocks)) if scale.num_blocks else ()}


def _post(url: str, body: dict | None) -> bytes:
    data = None if body is None else json_lib.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="POST", headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as resp:
        return resp.read()


def _warm_up(engine_urls: Sequence[str]) -> None:
    """One short completion per replica, so no policy pays the engine's first-request costs."""
    for url in engine_urls:
        with urllib.request.urlopen(f"{url}/v1/models", timeout=30) as resp:
            model = json_lib.loads(resp.read())["data"][0]["id"]
        _post(f"{url}/v1/completions", {"model": model, "prompt": "warm up " * 200, "max_tokens": 8})


def _progress(console: Console | None, run: dict, took: float) -> None:
    if console is not None:
        s = run["summary"]
        console.print(f"  {run['scale']:4s} {run['policy']:15s} {s['n']} requests, TTFT p90 {_ms(s['ttft_p90'])} ms, "
                      f"hit rate {_pct(s['cache_hit_rate'])} ({took:.1f}s)")


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
             engine: str = "sim", vllm_python: str | None = None, console: Console | None = None) -> dict:
    """Run the demo, print the table and ratios, write the reports; returns the bench JSON document.

    ``engine="vllm"``: the live phase on real vLLM replicas (see :func:`plan`), the policies of
    :data:`VLLM_POLICIES` unless ``policies`` are given; the simulated phase is unchanged."""
    if html:
        require_plotly("html")  # before minutes of runs, not after them
    sim_scale, live_scale = plan(quick, engine)
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
                 for r in run_sim(sim_scale, sim_policies, seed, console=console)]
    if live:
        what = (f"real vLLM replicas ({ENGINE_LABEL['vllm']}, {live_scale.kv_cache_tokens:,}-token KV cache each)"
                if engine == "vllm" else "simulated engine processes")
        console.print(f"[bold]live over HTTP[/bold]: {live_scale.engines} {what} + router, "
                      f"{live_scale.num_requests} requests at {live_scale.rate:g} req/s per policy")
        runs += [dict(r, offered_rps=live_scale.rate)
                 for r in run_live(live_scale, live_policies, seed, console=console, vllm_python=vllm_python)]
    policies = sim_policies
    rate_sweep: list[dict] = []
    if sim:
        console.print(f"[bold]rate sweep[/bold] (simulator): {', '.join(f'{f:g}x' for f in FACTORS)} of "
                      f"{sim_scale.rate:g} req/s, {sweep_requests(sim_scale)} requests per run")
        rate_sweep = sweep(sim_scale.workload, sim_scale.engines, sim_scale.num_blocks, sim_scale.rate, policies,
                           num_requests=sweep_requests(sim_scale), slo=SLO_DEMO, seed=seed)
    matched = (matched_load(sim_scale.workload, sim_scale.engines, sim_scale.num_blocks, rate_sweep, policies,
                            num_requests=sweep_requests(sim_scale) if quick else MATCHED_REQUESTS, slo=SLO_DEMO,
                            seed=seed) if rate_sweep else None)
    claims = [c for scale in ("sim", "live") if (c := ratios(runs, scale)) is not None]
    for c in claims:  # the claim is stated for simulated H100 engines; on vLLM CPU the ratios are measurements
        c["engine"] = "sim" if c["scale"] == "sim" else live_scale.engine
        c["claim_applies"] = c["engine"] == "sim"
    info = {"demo": "shared-prefix under KV pressure", "quick": quick, "seed": seed,
            "slo": {"ttft": SLO_DEMO.ttft, "tpot": SLO_DEMO.tpot}, "machine": "2-core CPU sandbox",
            "profile": DEFAULT_PROFILE, "scales": {s.name: s.info() for s in (sim_scale, live_scale)},
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
