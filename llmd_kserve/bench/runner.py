"""`llmd-kserve bench`: builds the workload and arrivals, runs them live (or in cluster_sim), writes reports.

Public API::

    make_spec(workload, trace=None, overrides={}, **trace_options) -> WorkloadSpec   ``overrides`` set spec fields
                                                                     (``--set k=v``); ``trace_options`` go to load_trace
    make_arrivals(rate=None, concurrency=None, sweep=None, pattern="poisson", trace=False) -> list[ArrivalSpec]
    workload_info(spec, arrivals, **extra) -> dict                   the report's ``workload`` section
    BenchOptions(...)                                                 everything ``llmd-kserve bench`` accepts
    bench_command(options, simulator=None, write_html=None) -> int the ``llmd-kserve bench`` command (exit code)
    fit_to_context(spec, sim, target=None, profile=…, model=None) -> WorkloadSpec   a trace's ``max_model_len`` set
    sim_context_len(profile=…) -> int                                 the simulated engines' max_model_len
    target_context(target, model=None) -> int | None                  the target's, from ``GET /v1/models``
    stack_info(config, engines, profile=…) -> dict                    ``workload.stack`` of simulated engines

A trace (``--trace FILE``) is fitted to the model's context before it runs: ``max_model_len`` from the options,
else the simulated engines' (``--sim``), else the target's ``/v1/models`` card; one line says what was clipped and
the report's ``workload.trace_fit`` records it. ``describe=True`` prints the trace's structure and runs nothing.

With ``sim=True`` the runs come from ``simulator(workload=spec, arrivals=arrivals, num_requests=n, seed=seed,
slo=slo, engines=N, config=name, policy_label=label, roles=..., progress=fn)`` (the CLI passes
``llmd_kserve.cluster_sim.run_bench``;
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

from llmd_kserve.bench.llmd_br import now_iso, write_benchmark_reports
from llmd_kserve.bench.progress import RunProgress
from llmd_kserve.bench.report import build_report, print_table, run_entry_from, write_json
from llmd_kserve.bench.stats import SLO
from llmd_kserve.bench.workloads import (
    WORKLOAD_ADAPTER,
    ArrivalSpec,
    TraceSpec,
    WorkloadSpec,
    build_requests,
    describe_trace,
    fit_summary,
    load_trace,
    parse_window,
)
from llmd_kserve.bench.workloads import sweep as sweep_arrivals
from llmd_kserve.defaults import DEFAULT_MODEL, DEFAULT_PROFILE
from llmd_kserve.errors import ConfigError, LlmdError, config_error_from
from llmd_kserve.latency import load_profile

log = logging.getLogger(__name__)

SimRunner = Callable[..., list[dict[str, Any]]]
HtmlWriter = Callable[[dict[str, Any], str], None]
"""``llmd_kserve.cluster_sim.run_bench``'s shape: keyword arguments in, ``runs[]`` items (bench JSON schema) out."""


def make_spec(workload: str, trace: str | None = None, overrides: Mapping[str, Any] | None = None,
              **trace_options: Any) -> WorkloadSpec:
    """A workload spec by kind with field overrides; ``trace`` (a trace file) for ``kind == "trace"``, read with
    ``load_trace(trace, **trace_options)``."""
    overrides = dict(overrides or {})
    if workload == "trace":
        if not trace:
            raise ConfigError("the trace workload needs --trace FILE", "trace")
        spec = load_trace(trace, **trace_options)
        if not overrides:
            return spec
        try:
            return TraceSpec.model_validate({**dict(spec), **overrides})
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
    """The report's ``workload`` section: the spec's fields (a trace's size and fitting instead of its entries)."""
    info = spec.model_dump(exclude={"entries"})
    if isinstance(spec, TraceSpec):
        info["trace_requests"] = len(spec.entries)
        info["trace_fit"] = fit_summary(spec, extra.get("num_requests")).as_dict()
    return {**info, "arrivals": [a.model_dump(exclude_none=True) for a in arrivals], **extra}


def fit_to_context(spec: WorkloadSpec, *, sim: bool, target: str | None = None, profile: str = DEFAULT_PROFILE,
                   model: str | None = None) -> WorkloadSpec:
    """A trace with ``max_model_len`` set: kept when set, else the simulated engines' (``sim``), else what
    ``target`` reports; any other workload unchanged."""
    if not isinstance(spec, TraceSpec) or spec.max_model_len is not None:
        return spec
    if sim:
        return spec.model_copy(update={"max_model_len": sim_context_len(profile)})
    return spec.model_copy(update={"max_model_len": target_context(target, model)}) if target else spec


def sim_context_len(profile: str = DEFAULT_PROFILE) -> int:
    """The context length of the simulated engines (their latency profile's ``max_model_len``)."""
    return load_profile(profile).max_model_len


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
    profile: str = DEFAULT_PROFILE
    """``sim`` only: the simulated engines' latency profile (a built-in name or a YAML/JSON file)."""
    prefill: int = 0
    decode: int = 0
    routers: int = 1
    """``sim`` only: router replicas, each with its own state (``SimOptions.routers``)."""
    balancer: str = "round-robin"
    """``sim`` only: how requests are spread over the router replicas (``SimOptions.balancer``)."""
    shared_load_delay: float | None = None
    """``sim`` only: the router replicas share their in-flight load with this delay, seconds (None: they do not)."""
    progress: bool = True
    timeout: float = 600.0
    trace_format: str = "mooncake"
    time_scale: float = 1.0
    """Trace replay: multiplies the recorded gaps between requests (0.1 replays ten times faster)."""
    max_requests: int | None = None
    """Trace: read at most this many requests (after ``window``)."""
    window: str | None = None
    """Trace: ``START:END`` seconds of the recorded trace to replay."""
    block_tokens: int = 512
    max_model_len: int | None = None
    """Fit trace requests to this context (None: the simulated engines' or the target's)."""
    fit: str = "clip"
    describe: bool = False
    """Print the trace's structure and stop."""
    report_format: str = "bench"
    """What ``json_path`` holds: ``bench`` (the bench JSON) or ``llmd-br`` (Benchmark Reports v0.2.1, one a run)."""
    autoscale: Mapping[str, Any] | None = None
    """``sim`` only: replicas start and stop under a scaling policy (``cluster_sim.autoscale.autoscale_options``
    keyword arguments, e.g. ``{"policy": "headroom"}``), starting from ``engines``."""


def _router_options(o: BenchOptions) -> dict[str, Any]:
    """The simulator's router-replica arguments, only when they differ from one router."""
    if o.routers == 1:
        return {}
    return {"routers": o.routers, "balancer": o.balancer, "shared_load_delay": o.shared_load_delay}


def bench_command(options: BenchOptions, simulator: SimRunner | None = None,
                  write_html: HtmlWriter | None = None) -> int:
    """The ``llmd-kserve bench`` command (not to be confused with ``cluster_sim.run_bench``, the simulator it may
    be handed, which returns ``runs[]`` items): run the benchmark ``options`` describe; print the table; write ``json_path`` / ``html_path`` when given
    (the page with ``write_html``, e.g. ``llmd_kserve.viz.report_page.write_html``: drawing lives above bench).

    ``prefill``/``decode`` (``sim`` only): a disaggregated simulated cluster of that many prefill and decode
    engines instead of ``engines`` aggregated ones; config ``default`` then means ``pd-predicted-ttft``."""
    o = options
    target, workload, trace, rate, concurrency, sweep = o.target, o.workload, o.trace, o.rate, o.concurrency, o.sweep
    num_requests, slo_ttft, slo_tpot, seed, sim, engines = o.num_requests, o.slo_ttft, o.slo_tpot, o.seed, o.sim, o.engines
    config, prefill, decode = o.config, o.prefill, o.decode
    if o.profile != DEFAULT_PROFILE and not sim:
        raise ConfigError("--profile sets the simulated engines' speed: it needs --sim", "profile")
    if (o.routers != 1 or o.shared_load_delay is not None) and not sim:
        raise ConfigError("--routers and --shared-load-delay shape the simulated cluster: they need --sim", "routers")
    if prefill or decode:
        if not sim:
            raise ConfigError("--prefill/--decode need --sim (a live target is benchmarked as it is)", "prefill")
        if prefill < 1 or decode < 1:
            raise ConfigError("--prefill and --decode each need at least one engine", "prefill")
        config = "pd-predicted-ttft" if config == "default" else config
    if trace and workload not in ("trace", "shared-prefix"):
        raise ConfigError(f"--trace replays a trace; it cannot be combined with --workload {workload}", "trace")
    if trace:
        workload = "trace"
    if o.describe and not trace:
        raise ConfigError("--describe needs --trace FILE", "describe")
    if o.report_format == "llmd-br" and not o.json_path and not o.describe:
        raise ConfigError("--report-format llmd-br writes to the --json path: give --json FILE", "report-format")
    window = parse_window(o.window) if o.window else None
    spec = make_spec(workload, trace, _parse_sets(o.overrides), fmt=o.trace_format, block_tokens=o.block_tokens,
                     time_scale=o.time_scale, window=window, max_requests=o.max_requests,
                     max_model_len=o.max_model_len, fit=o.fit) if trace else make_spec(
                         workload, None, _parse_sets(o.overrides))
    if isinstance(spec, TraceSpec):
        spec = fit_to_context(spec, sim=sim or o.describe, target=target, model=o.model, profile=o.profile)
        if o.describe:
            stats = describe_trace(spec)
            print("\n".join(stats.lines()))
            if o.json_path:
                write_json(stats.as_dict(), o.json_path)
            return 0
        print(f"trace {spec.source}: {fit_summary(spec, num_requests).line()}")
    arrivals = make_arrivals(rate, concurrency, sweep, o.arrival, trace=isinstance(spec, TraceSpec))
    slo = SLO(ttft=slo_ttft, tpot=slo_tpot)
    label = o.policy_label or (config if sim else "live")
    info = workload_info(spec, arrivals, num_requests=num_requests, seed=seed, slo={"ttft": slo_ttft, "tpot": slo_tpot},
                         started_at=now_iso())
    if sim:
        if simulator is None:
            raise LlmdError("sim=True needs simulator=llmd_kserve.cluster_sim.run_bench")
        roles = ("prefill",) * prefill + ("decode",) * decode if prefill else None
        if o.autoscale and roles:
            raise ConfigError("--autoscale scales aggregated replicas: leave out --prefill/--decode", "autoscale")
        scaling = {"autoscale": o.autoscale} if o.autoscale else {}
        with RunProgress(o.progress) as bar:
            runs = simulator(workload=spec, arrivals=arrivals, num_requests=num_requests, seed=seed, slo=slo,
                             engines=engines, config=config, policy_label=label, roles=roles, progress=bar,
                             profile=o.profile, **_router_options(o), **scaling)
        info |= {"mode": "sim", "engines": prefill + decode if roles else engines,
                 "stack": stack_info(config, prefill + decode if roles else engines, o.profile)}
        if roles:
            info |= {"prefill": prefill, "decode": decode}
    else:
        if not target:
            raise ConfigError("--target URL is required (or --sim)", "target")
        runs = _run_live(spec, arrivals, num_requests, seed, slo, label, target, o.model, o.engines_metrics,
                         o.progress, o.timeout)
        info |= {"mode": "live", "target": target,
                 "stack": {"router_config": o.policy_label or "unknown", "engines": len(o.engines_metrics) or None,
                           "model": o.model}}
    report = build_report(info, runs)
    print_table(report)
    for run in runs:
        if "autoscale" in run:
            a = run["autoscale"]
            print(f"autoscale {a['policy']}: {a['gpu_hours']:.3f} GPU-hours ({a['replica_seconds']:.0f} replica-seconds "
                  f"incl. start-up), mean ready {a['mean_ready']:.2f}, peak {a['peak_replicas']}, {a['starts']} starts")
    if o.json_path and o.report_format == "llmd-br":
        for path in write_benchmark_reports(report, o.json_path):
            print(f"wrote {path}")
    elif o.json_path:
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


def target_context(target: str, model: str | None = None) -> int | None:
    """The target's context length from ``/v1/models`` (None, with a warning, when it reports none)."""
    import aiohttp

    from llmd_kserve.aio import run
    from llmd_kserve.bench.loadgen import discover_max_model_len

    async def ask() -> int | None:
        async with aiohttp.ClientSession() as session:
            return await discover_max_model_len(session, target, model)

    found = run(ask())
    if found is None:
        log.warning("%s reports no max_model_len: trace requests are sent as recorded (give --max-model-len)", target)
    return found


def stack_info(config: str, engines: int, profile: str = DEFAULT_PROFILE) -> dict[str, Any]:
    """A stack of simulated engines running ``config``, for the report's ``workload.stack``."""
    from llmd_kserve.config.loader import read_config

    try:
        router_yaml: Any = read_config(config).model_dump(mode="json", by_alias=True, exclude_none=True)
    except LlmdError:
        router_yaml = None
    return {"router_config": config, "router_config_yaml": router_yaml, "engines": engines,
            "profile": profile, "model": DEFAULT_MODEL}
