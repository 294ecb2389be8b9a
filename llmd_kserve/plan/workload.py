"""What a plan is sized for: a workload (a named scenario, a trace file or a bench JSON) as requests at a rate."""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from llmd_kserve.bench.runner import sim_context_len
from llmd_kserve.bench.scenarios import SCENARIOS
from llmd_kserve.bench.workloads import (
    WORKLOAD_ADAPTER,
    ArrivalSpec,
    ChatSpec,
    RagSpec,
    ReasoningSpec,
    RequestSpec,
    SharedPrefixSpec,
    TraceSpec,
    build_requests,
    load_trace,
    make_workload,
    parse_window,
)
from llmd_kserve.defaults import DEFAULT_PROFILE
from llmd_kserve.errors import ConfigError, config_error_from

DURATION_S = 20.0
"""Virtual seconds of arrivals a synthetic workload runs for at least (the run has ``rate x duration`` requests)."""

SYNTHETIC: dict[str, Any] = {"shared-prefix": SharedPrefixSpec, "chat": ChatSpec, "rag": RagSpec,
                             "reasoning": ReasoningSpec}
"""Synthetic workload kinds a bench JSON may name, by ``kind`` tag."""

Builder = Callable[[float, int], list[RequestSpec]]


@dataclass(frozen=True, slots=True)
class PlanWorkload:
    """Requests at a rate: ``requests(rate, seed)`` in send order with arrival times; what the source suggests for
    the cluster (KV blocks per engine, SLO) when the caller gives none."""

    name: str
    build: Builder
    num_blocks: int | None = None
    slo_ttft: float | None = None
    slo_tpot: float | None = None
    native_rate: float | None = None
    """A trace's own mean rate (req/s); a target rate replays it faster or slower. None: synthetic."""
    info: dict[str, Any] = field(default_factory=dict)

    def requests(self, rate: float, seed: int) -> list[RequestSpec]:
        return self.build(rate, seed)


def from_scenario(name: str, duration_s: float = DURATION_S, num_requests: int | None = None) -> PlanWorkload:
    """A routing scenario (``bench.scenarios``): its requests, KV blocks and SLO."""
    sc = SCENARIOS.get(name)
    if sc is None:
        raise ConfigError(f"unknown scenario {name!r} (known: {', '.join(SCENARIOS)})", "workload")
    floor = num_requests or sc.num_requests

    def build(rate: float, seed: int) -> list[RequestSpec]:
        return sc.build(rate, random.Random(seed), max(floor, int(rate * max(duration_s, sc.min_duration_s))))

    return PlanWorkload(name, build, sc.num_blocks, sc.slo_ttft_s, sc.slo_tpot_s,
                        info={"source": "scenario", "scenario": name, "why": sc.why})


def from_spec(name: str, spec: Any, duration_s: float = DURATION_S, num_requests: int | None = None,
              num_blocks: int | None = None, info: Mapping[str, Any] | None = None) -> PlanWorkload:
    """A synthetic workload spec (``bench.workloads``) with Poisson arrivals at the target rate."""
    def build(rate: float, seed: int) -> list[RequestSpec]:
        n = max(num_requests or 0, int(rate * duration_s), 1)
        return make_workload(spec, ArrivalSpec(pattern="poisson", rate=rate), random.Random(seed), n)

    return PlanWorkload(name, build, num_blocks, info={"source": "spec", **spec.model_dump(), **(info or {})})


def from_trace(path: str | Path, *, window: str | None = None, max_requests: int | None = None,
               profile: str = DEFAULT_PROFILE, block_tokens: int = 512) -> PlanWorkload:
    """A request trace (Mooncake JSONL) fitted to the profile's context; a target rate compresses or stretches its
    recorded gaps so that its mean rate is the target (bursts keep their shape)."""
    spec = load_trace(path, window=parse_window(window) if window else None, max_requests=max_requests,
                      max_model_len=sim_context_len(profile), block_tokens=block_tokens)
    if len(spec.entries) < 2:
        raise ConfigError("a trace needs at least two requests to have a rate", str(path))
    stamps = [e.timestamp for e in spec.entries]
    span = (max(stamps) - min(stamps)) / 1000.0
    native = len(spec.entries) / span if span > 0 else None
    if native is None:
        raise ConfigError("every request of the trace has the same timestamp: it has no rate", str(path))
    cache: dict[tuple[float, int], list[RequestSpec]] = {}

    def build(rate: float, seed: int) -> list[RequestSpec]:
        key = (rate, seed)
        if key not in cache:
            scaled: TraceSpec = spec.model_copy(update={"time_scale": native / rate})
            cache.clear()  # a trace's prompts are large: keep one rate's
            cache[key] = build_requests(scaled, random.Random(seed))
        return cache[key]

    return PlanWorkload(Path(path).name, build, native_rate=native,
                        info={"source": "trace", "trace": Path(path).name, "requests": len(spec.entries),
                              "span_s": span, "native_rate": native, "window": window})


def from_bench_json(path: str | Path, duration_s: float = DURATION_S) -> tuple[PlanWorkload, float | None]:
    """The workload of a bench JSON (``llmd-kserve bench --json``) and the highest rate it ran at (None: closed
    loop). A trace workload is read again from its ``source`` file, which must be where the JSON was written."""
    p = Path(path)
    try:
        doc = json.loads(p.read_text())
        w = dict(doc["workload"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"not a bench JSON (no workload section): {exc}", str(p)) from exc
    rates = [a["rate"] for a in w.get("arrivals", []) if isinstance(a, dict) and a.get("rate")]
    rate = max(rates) if rates else None
    kind = w.get("kind")
    if kind == "trace":
        src = w.get("source")
        found = next((c for c in (Path(str(src)), p.parent / str(src)) if src and c.is_file()), None)
        if found is None:
            raise ConfigError(f"its trace {src!r} is not found next to it; plan the trace file itself", str(p))
        return from_trace(found), rate
    model = SYNTHETIC.get(str(kind))
    if model is None:
        raise ConfigError(f"unknown workload kind {kind!r} (known: trace, {', '.join(SYNTHETIC)})", f"{p}: workload.kind")
    try:
        spec = WORKLOAD_ADAPTER.validate_python({k: v for k, v in w.items() if k in model.model_fields})
    except ValidationError as exc:
        raise config_error_from(exc, f"{p}: workload.") from exc
    return from_spec(f"{p.name} ({kind})", spec, duration_s, w.get("num_requests"),
                     info={"bench_json": p.name}), rate


def resolve(workload: str, *, duration_s: float = DURATION_S, window: str | None = None,
            max_requests: int | None = None, profile: str = DEFAULT_PROFILE) -> tuple[PlanWorkload, float | None]:
    """A scenario name, a ``.json`` bench JSON or a trace file -> (workload, the rate it names or None)."""
    if workload in SCENARIOS:
        return from_scenario(workload, duration_s), None
    p = Path(workload)
    if p.is_file():
        if p.suffix == ".json":
            return from_bench_json(p, duration_s)
        wl = from_trace(p, window=window, max_requests=max_requests, profile=profile)
        return wl, wl.native_rate
    raise ConfigError(f"unknown workload {workload!r}: not a scenario ({', '.join(SCENARIOS)}) nor a file",
                      "workload")
