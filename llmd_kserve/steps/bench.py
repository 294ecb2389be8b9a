"""Pipeline steps that measure: ``benchmark`` (a URL, a self-contained local stack, or the simulator) and ``simulate``.

Both write the bench JSON document and the HTML report (``llmd_kserve.bench.report``) and return the headline
metrics the pipeline logs: TTFT p50/p90, TPOT p50, goodput under the SLO, SLO attainment and prefix-cache hit
rate (seconds, requests/s, fractions), taken from the run with the highest goodput (a sweep logs each rate's
goodput too, as ``goodput_rps_<i>``).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping, Sequence
from typing import Any

from llmd_kserve.bench.report import build_report, run_entry_from, write_json
from llmd_kserve.bench.runner import fit_to_context, make_arrivals, make_spec, stack_info, workload_info
from llmd_kserve.bench.stats import SLO
from llmd_kserve.bench.workloads import parse_window
from llmd_kserve.errors import ConfigError
from llmd_kserve.viz.report_page import write_html

HEADLINE = ("ttft_p50", "ttft_p90", "tpot_p50", "goodput_rps", "slo_attainment", "cache_hit_rate")
"""The metric names every benchmark step returns (the Metrics artifact's keys)."""


def headline(report: Mapping[str, Any]) -> dict[str, float]:
    """The headline metrics of a bench report (metrics a run could not measure are left out)."""
    runs = report.get("runs", [])
    if not runs:
        raise ConfigError("the report has no runs", "runs")
    best = max(runs, key=lambda r: r["summary"].get("goodput_rps") or 0.0)
    out = {k: float(best["summary"][k]) for k in HEADLINE if best["summary"].get(k) is not None}
    out["requests"] = float(sum(r["summary"]["n"] for r in runs))
    out["errors"] = float(sum(r["summary"]["errors"] for r in runs))
    if len(runs) > 1:
        for i, r in enumerate(runs):
            out[f"goodput_rps_{i}"] = float(r["summary"].get("goodput_rps") or 0.0)
    return out


def benchmark(target: str, json_path: str, html_path: str | None = None, *, workload: str = "shared-prefix",
              workload_params: Mapping[str, Any] | None = None, rate: float = 4.0, sweep: Sequence[float] = (),
              num_requests: int = 40, slo_ttft: float | None = 0.5, slo_tpot: float | None = 0.05, seed: int = 0,
              config: str = "default", engines: int = 2, prefill: int = 0, decode: int = 0,
              num_blocks: int | None = None, time_scale: float = 1.0, timeout: float = 600.0,
              trace: str | None = None, trace_params: Mapping[str, Any] | None = None) -> dict[str, float]:
    """Benchmark ``target``: a router URL (``http://…``), ``"local"`` (a local stack of simulated engines started
    for this step and stopped after it, with ``config``/``engines``/``num_blocks``/``time_scale``) or ``"sim"`` (the
    cluster simulator). One run at ``rate`` req/s (Poisson), or one per rate of ``sweep``. Writes the bench JSON
    and the HTML report; returns :func:`headline` metrics.

    ``trace`` (a trace file) replays it instead of ``workload``: at its own times (``sweep``: its prompts at those
    rates), every request unless ``num_requests`` > 0, fitted to the engines' context; ``trace_params`` are
    :data:`TRACE_PARAMS` (``time_scale`` there is the trace's, not the local stack's)."""
    if trace:
        spec = make_spec("trace", trace, None, **trace_options(trace_params or {}))
        arrivals = make_arrivals(sweep=list(sweep) or None, trace=True)
    else:
        spec = make_spec(workload, None, dict(workload_params or {}))
        arrivals = make_arrivals(rate=None if sweep else rate, sweep=list(sweep) or None)
    count = None if trace and num_requests <= 0 else num_requests
    # a local stack's engines are simulated ones: their context is the simulator's
    spec = fit_to_context(spec, sim=target in ("sim", "local"), target=target if target.startswith("http") else None)
    slo = SLO(ttft=slo_ttft, tpot=slo_tpot)
    info = workload_info(spec, arrivals, num_requests=count, seed=seed, slo={"ttft": slo_ttft, "tpot": slo_tpot})
    if target == "sim":
        from llmd_kserve.cluster_sim import SimOptions, pd_roles
        from llmd_kserve.cluster_sim import run_bench as sim_bench

        roles = pd_roles(prefill, decode) if prefill else None
        opts = SimOptions(engines=engines, roles=roles, num_blocks=num_blocks, seed=seed)
        cfg = "pd-predicted-ttft" if prefill and config == "default" else config
        runs = sim_bench(workload=spec, arrivals=arrivals, num_requests=count, seed=seed, slo=slo,
                         config=cfg, policy_label=cfg, options=opts)
        info |= {"mode": "sim", "engines": opts.engines, "num_blocks": num_blocks,
                 "stack": stack_info(cfg, opts.engines)}
    elif target == "local":
        from llmd_kserve.stack import LocalStack

        shape = {"prefill": prefill, "decode": decode} if prefill else {"engines": engines}
        args = ("--num-blocks", str(num_blocks)) if num_blocks else ()
        with LocalStack(**shape, config=config, prometheus=False, engine_args=args, seed=seed,
                        time_scale=time_scale) as stack:
            runs = _live(spec, arrivals, count, seed, slo, config, stack.router_url,
                         stack.engine_base_urls, timeout)
        info |= {"mode": "live", "target": "local", "engines": prefill + decode or engines, "num_blocks": num_blocks,
                 "time_scale": time_scale, "stack": stack_info(config, prefill + decode or engines)}
    elif target.startswith(("http://", "https://")):
        runs = _live(spec, arrivals, count, seed, slo, "live", target.rstrip("/"), (), timeout)
        info |= {"mode": "live", "target": target}
    else:
        raise ConfigError(f"target must be a URL, 'local' or 'sim', got {target!r}", "target")
    report = build_report(info, runs)
    write_json(report, json_path)
    if html_path:
        write_html(report, html_path)
    return headline(report)


TRACE_PARAMS = ("time_scale", "window", "max_requests", "max_model_len", "fit", "block_tokens", "format")
"""What ``trace_params`` may set (as ``llmd-kserve bench``'s flags of the same names; ``window`` is "START:END")."""


def trace_options(params: Mapping[str, Any]) -> dict[str, Any]:
    """``trace_params`` as ``load_trace`` keywords; an unknown key is a ConfigError naming it."""
    unknown = sorted(set(params) - set(TRACE_PARAMS))
    if unknown:
        raise ConfigError(f"unknown trace parameter(s) {', '.join(unknown)} (known: {', '.join(TRACE_PARAMS)})",
                          "trace_params")
    out = {("fmt" if k == "format" else k): v for k, v in params.items() if v is not None}
    if "window" in out:
        out["window"] = parse_window(str(out["window"]))
    return out


def simulate(json_path: str, html_path: str | None = None, **kwargs: Any) -> dict[str, float]:
    """A what-if in the virtual-time cluster simulator: :func:`benchmark` with ``target="sim"``."""
    return benchmark("sim", json_path, html_path, **kwargs)


def _live(spec: Any, arrivals: Sequence[Any], num_requests: int | None, seed: int, slo: SLO, label: str, url: str,
          engine_urls: Sequence[str], timeout: float) -> list[dict]:
    from llmd_kserve.bench.loadgen import LoadConfig, run_sweep
    from llmd_kserve.bench.workloads import assign_arrivals, build_requests

    pairs = []
    for i, a in enumerate(arrivals):  # as `llmd-kserve bench` does: fresh prompts per sweep point
        rng = random.Random(seed + i)
        pairs.append((a, assign_arrivals(build_requests(spec, rng, num_requests), a, rng)))
    config = LoadConfig(target=url, engine_urls=tuple(engine_urls), progress=False, timeout_s=timeout)
    results = asyncio.run(run_sweep(pairs, config))
    return [run_entry_from(r, label, slo) for r in results]
