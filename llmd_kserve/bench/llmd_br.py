"""llm-d Benchmark Report v0.2.1 documents from the bench JSON document: one report per run.

    benchmark_reports(report, *, uid=None) -> list[dict]     pure; ``run``, ``scenario`` and ``results`` per run
    write_benchmark_reports(report, path) -> list[Path]      one file per run (``name_0.json``, … when several);
                                                              YAML when ``path`` ends in ``.yaml`` / ``.yml``

The bench document's ``workload`` section gives the scenario: ``stack`` (router config and its YAML, engines,
roles, latency profile, model) becomes ``scenario.stack`` (a ``generic`` router component and ``inference_engine``
components), the workload and its arrivals ``scenario.load``. Each run's summary gives
``results.request_performance.aggregate`` (latencies in seconds: mean, p50, p90, p95, p99) and the engines'
prefix-cache hit rate goes under ``results.observability`` (the engines' component, units ``fraction``). The
``llmd-benchmark-report`` package (the ``dev`` extra) validates the output; nothing here needs it.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from llmd_kserve import __version__
from llmd_kserve.bench.stats import percentile

VERSION = "0.2.1"
TOOL = "llmd-kserve"
_QS = ("p50", "p90", "p95", "p99")


def _cfg_id(obj: Any) -> str:
    return hashlib.md5(json.dumps(obj, sort_keys=True, default=str).encode(), usedforsecurity=False).hexdigest()


def _stats(summary: Mapping[str, Any], prefix: str, units: str) -> dict[str, Any] | None:
    if summary.get(f"{prefix}_mean") is None:
        return None
    out = {"units": units, "mean": float(summary[f"{prefix}_mean"])}
    out |= {q: float(summary[f"{prefix}_{q}"]) for q in _QS if summary.get(f"{prefix}_{q}") is not None}
    return out


def _values_stats(values: Sequence[float], units: str) -> dict[str, Any] | None:
    if not values:
        return None
    out = {"units": units, "mean": sum(values) / len(values), "min": min(values), "max": max(values)}
    return out | {q: percentile(values, float(q[1:])) for q in _QS}


def _rate(value: Any, units: str) -> dict[str, Any] | None:
    return None if value is None else {"units": units, "mean": float(value)}


def _drop_none(d: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


def _stack(workload: Mapping[str, Any]) -> tuple[list[dict[str, Any]], str]:
    """The components and the label of the engines' component (observability refers to it)."""
    stack = dict(workload.get("stack") or {})
    config = stack.get("router_config") or workload.get("config") or "unknown"
    router_native = stack.get("router_config_yaml")
    router = {"metadata": {"label": "router", "cfg_id": _cfg_id(router_native or config),
                           "description": f"llmd-kserve router, config {config}"},
              "standardized": {"kind": "generic", "tool": TOOL, "tool_version": __version__, "kind_draft": "router",
                               "config": str(config)},
              "native": {"config": router_native} if router_native is not None else {}}
    sim = workload.get("mode") == "sim"
    accelerator = str(stack.get("profile") or ("simulated" if sim else "unknown"))
    model = str(stack.get("model") or workload.get("model") or "unknown")
    roles = [("prefill", int(workload["prefill"])), ("decode", int(workload["decode"]))] if workload.get(
        "prefill") else [("replica", int(stack.get("engines") or workload.get("engines") or 1))]
    components = [router]
    for role, n in roles:
        standardized = {"kind": "inference_engine", "tool": "llmd-kserve engine_sim" if sim else "vllm",
                        "tool_version": __version__ if sim else "unknown", "role": role, "replicas": max(n, 1),
                        "model": {"name": model},
                        "accelerator": {"model": accelerator, "count": max(n, 1), "parallelism": {"tp": 1}}}
        components.append({"metadata": {"label": f"engines-{role}", "cfg_id": _cfg_id(standardized)},
                           "standardized": standardized, "native": {"config": {"profile": stack.get("profile")}}})
    return components, str(components[-1]["metadata"]["label"])


def _seq_len(values: Sequence[int]) -> dict[str, Any]:
    if not values:
        return {"distribution": "other", "value": 0}
    return {"distribution": "other", "value": sum(values) / len(values), "min": int(min(values)),
            "max": max(int(max(values)), 1)}


def _load(workload: Mapping[str, Any], run: Mapping[str, Any], stage: int) -> dict[str, Any]:
    requests = run.get("requests") or []
    arrivals = list(workload.get("arrivals") or ())
    arrival = next((a for a in arrivals if _label(a) == run.get("arrival")),
                   arrivals[stage] if stage < len(arrivals) else {})
    std: dict[str, Any] = {
        "tool": TOOL, "tool_version": __version__, "source": "random", "stage": stage,
        "input_seq_len": _seq_len([int(r.get("prompt_tokens") or 0) for r in requests]),
        "output_seq_len": _seq_len([int(r.get("output_tokens") or 0) for r in requests if r.get("ok")]),
    }
    if arrival.get("pattern") in ("poisson", "constant") and arrival.get("rate"):
        std["rate_qps"] = float(arrival["rate"])
    elif arrival.get("pattern") == "concurrency" and arrival.get("concurrency"):
        std["concurrency"] = int(arrival["concurrency"])
    elif run.get("offered_rps"):
        std["rate_qps"] = float(run["offered_rps"])
    elif arrival.get("pattern") == "trace" and len(requests) > 1:  # the replayed trace's own rate
        span = max(r.get("start") or 0.0 for r in requests) - min(r.get("start") or 0.0 for r in requests)
        if span > 0:
            std["rate_qps"] = len(requests) / span
    kind = workload.get("kind")
    if kind == "shared-prefix":
        std["prefix"] = {"prefix_len": {"distribution": "fixed", "value": int(workload.get("system_prompt_len", 0))},
                         "num_groups": int(workload.get("num_groups", 1)),
                         "num_users_per_group": int(workload.get("prompts_per_group", 1)), "num_prefixes": 1}
    elif kind == "chat":
        std["multi_turn"] = {"enabled": True, "max_turns": {"distribution": "fixed",
                                                            "value": int(workload.get("turns_per_session", 1))}}
    native = {k: v for k, v in workload.items() if k not in ("stack",)}
    description = f"{kind} workload" + (f" from {workload['source']}" if workload.get("source") else "")
    return {"metadata": {"cfg_id": _cfg_id(native), "description": description}, "standardized": std,
            "native": {"config": json.loads(json.dumps(native, default=str))}}


def _label(arrival: Mapping[str, Any]) -> str:
    """``ArrivalSpec.label`` of a dumped arrival spec."""
    pattern = arrival.get("pattern")
    if pattern == "concurrency":
        return f"concurrency={arrival.get('concurrency')}"
    return "trace" if pattern == "trace" else f"{pattern}@{float(arrival.get('rate') or 0):g}/s"


def _results(run: Mapping[str, Any], engines_label: str) -> dict[str, Any]:
    s = run.get("summary") or {}
    requests = run.get("requests") or []
    ok = [r for r in requests if r.get("ok")]
    latency = _drop_none({
        "time_to_first_token": _stats(s, "ttft", "s"), "time_per_output_token": _stats(s, "tpot", "s/token"),
        "inter_token_latency": _stats(s, "itl", "s/token"), "request_latency": _stats(s, "e2e", "s")})
    in_rate, out_rate = s.get("input_tok_s"), s.get("output_tok_s")
    throughput = _drop_none({
        "input_token_rate": _rate(in_rate, "tokens/s"), "output_token_rate": _rate(out_rate, "tokens/s"),
        "total_token_rate": _rate((in_rate or 0) + (out_rate or 0), "tokens/s") if in_rate or out_rate else None,
        "request_rate": _rate(s.get("request_rps"), "queries/s")})
    reqs = _drop_none({
        "total": int(s.get("n") or len(requests)), "failures": int(s.get("errors") or 0),
        "input_length": _values_stats([float(r["prompt_tokens"]) for r in ok if r.get("prompt_tokens")], "count"),
        "output_length": _values_stats([float(r["output_tokens"]) for r in ok if r.get("output_tokens")], "count")})
    out: dict[str, Any] = {"request_performance": {"aggregate": {"requests": reqs, "latency": latency,
                                                                 "throughput": throughput}}}
    engine_rate = s.get("cache_hit_rate_engine")
    hit = engine_rate if engine_rate is not None else s.get("cache_hit_rate")
    observability: dict[str, Any] = {}
    if hit is not None:
        observability["components"] = [{"component_label": engines_label,
                                        "aggregate": {"cache_hit_rate": {"units": "fraction", "mean": float(hit)}}}]
    if s.get("n"):
        observability["drop_rate"] = {"units": "fraction", "mean": float(s.get("shed_rate") or 0.0)}
    if observability:
        out["observability"] = observability
    return out


def benchmark_reports(report: Mapping[str, Any], *, uid: str | None = None) -> list[dict[str, Any]]:
    """One Benchmark Report v0.2.1 per run of a bench JSON document; the runs share ``run.eid``."""
    workload = dict(report.get("workload") or {})
    components, engines_label = _stack(workload)
    eid = uuid.uuid5(uuid.NAMESPACE_URL, f"{TOOL}:{uid or uuid.uuid4().hex}").hex
    started = workload.get("started_at")
    out = []
    for i, run in enumerate(report.get("runs") or []):
        wall = float((run.get("summary") or {}).get("wall_s") or 0.0)
        time: dict[str, Any] = {"duration": f"PT{wall:.3f}S"}
        if started:
            start = datetime.fromisoformat(str(started))
            time |= {"start": start.isoformat(), "end": (start + timedelta(seconds=wall)).isoformat()}
        name = " · ".join(str(run[k]) for k in ("policy", "scale", "arrival") if run.get(k))
        out.append({
            "version": VERSION,
            "run": {"uid": uuid.uuid5(uuid.NAMESPACE_URL, f"{eid}:{i}").hex, "eid": eid, "time": time,
                    "description": name},
            "scenario": {"stack": components, "load": _load(workload, run, i)},
            "results": _results(run, engines_label),
        })
    return out


def write_benchmark_reports(report: Mapping[str, Any], path: str | Path) -> list[Path]:
    """Write each run's report: ``path`` itself for one run, ``<stem>_<i><suffix>`` for several."""
    docs = benchmark_reports(report)
    p = Path(path)
    paths = [p] if len(docs) == 1 else [p.with_name(f"{p.stem}_{i}{p.suffix}") for i in range(len(docs))]
    as_yaml = p.suffix.lower() in (".yaml", ".yml")
    for doc, target in zip(docs, paths, strict=True):
        target.write_text(yaml.safe_dump(doc, sort_keys=False) if as_yaml else json.dumps(doc, indent=1))
    return paths


def now_iso() -> str:
    """The current UTC time, as ``workload.started_at`` records it."""
    return datetime.now(UTC).isoformat(timespec="seconds")
