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
from llmd_kserve.bench.runner import make_arrivals, make_spec, workload_info
from llmd_kserve.bench.stats import SLO
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
              num_blocks: int | None = None, time_scale: float = 1.0, timeout: float = 600.0) -> dict[str, float]:
    """Benchmark ``target``: a router URL (``http://…``), ``"local"`` (a local stack of simulated engines started
    for this step and stopped after it, with ``config``/``engines``/``num_blocks``/``time_scale``) or ``"sim"`` (the
    cluster simulator). One run at ``rate`` req/s (Poisson), or one per rate of ``sweep``. Writes the bench JSON
    and the HTML report; returns :func:`headline` metrics."""
    spec = make_spec(workload, None, dict(workload_params or {}))
    arrivals = make_arrivals(rate=None if sweep else rate, sweep=list(sweep) or None)
    slo = SLO(ttft=slo_ttft, tpot=slo_tpot)
    info = workload_info(spec, arrivals, num_requests=num_requests, seed=seed, slo={"ttft": slo_ttft, "tpot": slo_tpot})
    if target == "sim":
        from llmd_kserve.cluster_sim import SimOptions, pd_roles
        from llmd_kserve.cluster_sim import run_bench as sim_bench

        roles = pd_roles(prefill, decode) if prefill else None
        opts = SimOptions(engines=engines, roles=roles, num_blocks=num_blocks, seed=seed)
        cfg = "pd-predicted-ttft" if prefill and config == "default" else config
        runs = sim_bench(workload=spec, arrivals=arrivals, num_requests=num_requests, seed=seed, slo=slo,
                         config=cfg, policy_label=cfg, options=opts)
        info |= {"mode": "sim", "engines": opts.engines, "num_blocks": num_blocks}
    elif target == "local":
        from llmd_kserve.stack import LocalStack

        shape = {"prefill": prefill, "decode": decode} if prefill else {"engines": engines}
        args = ("--num-blocks", str(num_blocks)) if num_blocks else ()
        with LocalStack(**shape, config=config, prometheus=False, engine_args=args, seed=seed,
                        time_scale=time_scale) as stack:
            runs = _live(spec, arrivals, num_requests, seed, slo, config, stack.router_url,
                         stack.engine_base_urls, timeout)
        info |= {"mode": "live", "target": "local", "engines": prefill + decode or engines, "num_blocks": num_blocks,
                 "time_scale": time_scale}
    elif target.startswith(("http://", "https://")):
        runs = _live(spec, arrivals, num_requests, seed, slo, "live", target.rstrip("/"), (), timeout)
        info |= {"mode": "live", "target": target}
    else:
        raise ConfigError(f"target must be a URL, 'local' or 'sim', got {target!r}", "target")
    report = build_report(info, runs)
    write_json(report, json_path)
    if html_path:
        write_html(report, html_path)
    return headline(report)


def simulate(json_path: str, html_path: str | None = None, **kwargs: Any) -> dict[str, float]:
    """A what-if in the virtual-time cluster simulator: :func:`benchmark` with ``target="sim"``."""
    return benchmark("sim", json_path, html_path, **kwargs)


def _live(spec: Any, arrivals: Sequence[Any], num_requests: int, seed: int, slo: SLO, label: str, url: str,
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
