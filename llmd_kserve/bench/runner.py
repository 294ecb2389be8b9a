"""`llmd-kserve bench`: builds the workload and arrivals, runs them live (or in cluster_sim), writes reports.

Public API::

    make_spec(workload, trace=None, overrides={}) -> WorkloadSpec   ``overrides`` set spec fields (``--set k=v``)
    make_arrivals(rate=None, concurrency=None, sweep=None, pattern="poisson", trace=False) -> list[ArrivalSpec]
    workload_info(spec, arrivals, **extra) -> dict                   the report's ``workload`` section
    BenchOptions(...)                                                 everything ``llmd-kserve bench`` accepts
    run_bench(options, simulator=None, write_html=None) -> int     what the CLI calls

With ``sim=True`` the runs come from ``simulator(workload=spec, arrivals=arrivals, num_requests=n, seed=seed,
slo=slo, engines=N, config=name, policy_label=label, roles=...)`` (the CLI passes ``llmd_kserve.cluster_sim.run_bench``;
bench sits below cluster_sim and does not import it), which returns ``runs[]`` items in the bench JSON schema;
everything else (JSON, HTML, table) is shared.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from llmd_kserve.bench.report import build_report, print_table, run_entry_from, write_json
from llmd_kserve.bench.stats import SLO
from llmd_kserve.bench.workloads import (
    WORKLOAD_ADAPTER,
    ArrivalSpec,
    TraceSpec,
    WorkloadSpec,
    build_requests,
    load_trace,
)
from llmd_kserve.bench.workloads import sweep as sweep_arrivals
from llmd_kserve.errors import ConfigError, LlmdError, config_error_from

log = logging.getLogger(__name__)

SimRunner = Callable[..., list[dict[str, Any]]]
HtmlWriter = Callable[[dict[str, Any], str], None]
"""``llmd_kserve.cluster_sim.run_bench``'s shape: keyword arguments in, ``runs[]`` items (bench JSON schema) out."""


def make_spec(workload: str, trace: str | None = None, overrides: Mapping[str, Any] | None = None) -> WorkloadSpec:
    """A workload spec by kind with field overrides; ``trace`` (a Mooncake JSONL path) for ``kind == "trace"``."""
    overrides = dict(overrides or {})
    if workload == "trace":
        if not trace:
            raise ConfigError("the trace workload needs --trace FILE", "trace")
        try:
            return TraceSpec.model_validate({"entries": load_trace(trace).entries, **overrides})
        except ValidationError as exc:
            raise config_error_from(exc, "set:") from exc
    try:
        return WORKLOAD_ADAPTER.validate_python({"kind": workload, **overrides})
    except ValidationError as exc:
        raise config_error_from(exc, "set:") from exc


def make_arrivals(rate: float | None = None, concurrency: int | None = None, sweep: Sequence[float] | None = None,
                  pattern: str = "poisson", trace: bool = False) -> list[ArrivalSpec]:
    """One arrival spec per run: a sweep gives one per rate; nothing given means trace times or concurrency 1."""
    try:
        if sweep:
            return sweep_arrivals(sweep, pattern)  # type: ignore[arg-type]
        if concurrency:
            return [ArrivalSpec(pattern="concurrency", concurrency=concurrency)]
        if rate:
            return [ArrivalSpec(pattern=pattern, rate=rate)]
    except ValidationError as exc:
        raise ConfigError(exc.errors()[0]["msg"], "rate") from exc
    return [ArrivalSpec(pattern="trace")] if trace else [ArrivalSpec(pattern="concurrency", concurrency=1)]


def workload_info(spec: WorkloadSpec, arrivals: Sequence[ArrivalSpec], **extra: Any) -> dict[str, Any]:
    info = spec.model_dump(exclude={"entries"})
    if isinstance(spec, TraceSpec):
        info["trace_requests"] = len(spec.entries)
    return {**info, "arrivals": [a.model_dump(exclude_none=True) for a in arrivals], **extra}


def _parse_sets(items: Sequence[str] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"expected KEY=VALUE, got {item!r}", "set")
        out[key.strip().replace("-", "_")] = value.strip()
    return out


@dataclass(frozen=True, slots=True)
class BenchOptions:
    """Everything ``llmd-kserve bench`` accepts (the CLI builds it field by field)."""

    target: str | None = None
    """Base URL of the router or an engine (live runs)."""
    workload: str = "shared-prefix"
    trace: str | None = None
    """Mooncake JSONL path, for ``workload == "trace"``."""
    rate: float | None = None
    concurrency: int | None = None
    sweep: tuple[float, ...] = ()
    arrival: str = "poisson"
    num_requests: int | None = None
    slo_ttft: float | None = None
    slo_tpot: float | None = None
    json_path: str | None = None
    html_path: str | None = None
    seed: int = 0
    engines_metrics: tuple[str, ...] = ()
    policy_label: str | None = None
    model: str | None = None
    overrides: tuple[str, ...] = ()
    """Workload fields as ``KEY=VALUE`` (``--set``)."""
    sim: bool = False
    engines: int = 8
    config: str = "default"
    prefill: int = 0
    decode: int = 0
    progress: bool = True
    timeout: float = 600.0


def run_bench(options: BenchOptions, simulator: SimRunner | None = None, write_html: HtmlWriter | None = None) -> int:
    """Run the benchmark ``options`` describe; print the table; write ``json_path`` / ``html_path`` when given
    (the page with ``write_html``, e.g. ``llmd_kserve.viz.report_page.write_html``: drawing lives above bench).

    ``prefill``/``decode`` (``sim`` only): a disaggregated simulated cluster of that many prefill and decode
    engines instead of ``engines`` aggregated ones; config ``default`` then means ``pd-predicted-ttft``."""
    o = options
    target, workload, trace, rate, concurrency, sweep = o.target, o.workload, o.trace, o.rate, o.concurrency, o.sweep
    num_requests, slo_ttft, slo_tpot, seed, sim, engines = o.num_requests, o.slo_ttft, o.slo_tpot, o.seed, o.sim, o.engines
    config, prefill, decode = o.config, o.prefill, o.decode
    if prefill or decode:
        if not sim:
            raise ConfigError("--prefill/--decode need --sim (a live target is benchmarked as it is)", "prefill")
        if prefill < 1 or decode < 1:
            raise ConfigError("--prefill and --decode each need at least one engine", "prefill")
        config = "pd-predicted-ttft" if config == "default" else config
    spec = make_spec(workload, trace, _parse_sets(o.overrides))
    arrivals = make_arrivals(rate, concurrency, sweep, o.arrival, trace=workload == "trace")
    slo = SLO(ttft=slo_ttft, tpot=slo_tpot)
    label = o.policy_label or (config if sim else "live")
    info = workload_info(spec, arrivals, num_requests=num_requests, seed=seed, slo={"ttft": slo_ttft, "tpot": slo_tpot})
    if sim:
        if simulator is None:
            raise LlmdError("sim=True needs simulator=llmd_kserve.cluster_sim.run_bench")
        roles = ("prefill",) * prefill + ("decode",) * decode if prefill else None
        runs = simulator(workload=spec, arrivals=arrivals, num_requests=num_requests, seed=seed, slo=slo,
                             engines=engines, config=config, policy_label=label, roles=roles)
        info |= {"mode": "sim", "engines": prefill + decode if roles else engines}
        if roles:
            info |= {"prefill": prefill, "decode": decode}
    else:
        if not target:
            raise ConfigError("--target URL is required (or --sim)", "target")
        runs = _run_live(spec, arrivals, num_requests, seed, slo, label, target, o.model, o.engines_metrics,
                         o.progress, o.timeout)
        info |= {"mode": "live", "target": target}
    report = build_report(info, runs)
    print_table(report)
    if o.json_path:
        write_json(report, o.json_path)
    if o.html_path:
        if write_html is None:
            raise ConfigError("an HTML report needs a page writer (llmd_kserve.viz.report_page.write_html)", "html")
        write_html(report, o.html_path)
    return 0 if all(r["summary"]["n"] > r["summary"]["errors"] for r in runs) else 1


def _run_live(spec: WorkloadSpec, arrivals: Sequence[ArrivalSpec], num_requests: int | None, seed: int, slo: SLO,
              label: str, target: str, model: str | None, engine_urls: Sequence[str], progress: bool,
              timeout: float) -> list[dict]:
    import asyncio

    from llmd_kserve.bench.loadgen import LoadConfig, run_sweep
    from llmd_kserve.bench.workloads import assign_arrivals

    pairs = []
    for i, a in enumerate(arrivals):  # fresh prompts per sweep point, so one run does not warm the next one's cache
        rng = random.Random(seed + i)
        pairs.append((a, assign_arrivals(build_requests(spec, rng, num_requests), a, rng)))
    config = LoadConfig(target=target, model=model, engine_urls=tuple(engine_urls), progress=progress,
                        timeout_s=timeout)
    results = asyncio.run(run_sweep(pairs, config))
    return [run_entry_from(r, label, slo) for r in results]
