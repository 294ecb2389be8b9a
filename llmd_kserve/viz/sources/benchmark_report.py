"""llm-d Benchmark Reports (v0.2.x and v0.1; ours, inference-perf's or llm-d-benchmark's) as ``RunPoint`` records,
so the figures draw them beside bench JSON runs.

    load_benchmark_reports(*sources) -> tuple[RunPoint, ...]   YAML or JSON files (several documents each), or
                                                               parsed documents; one point per report
    report_point(doc, name="") -> RunPoint                     one parsed report

Latencies are converted to seconds from the report's units (``ms``, ``s``, ``ms/token``, ``s/token``); a run is
labelled by ``run.description``, else its tool and stage, else the file name, and its ``scale`` is the load tool's
name (``inference-perf``, ``llmd-kserve``, …). The prefix-cache hit rate comes from ``results.observability``
(a component's ``cache_hit_rate``, or the ``vllm_prefix_cache_hit_rate`` entry llm-d-benchmark writes).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from llmd_kserve.viz.data import Quantiles, RunPoint

_SCALE = {"s": 1.0, "ms": 1e-3, "s/token": 1.0, "ms/token": 1e-3}
_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _get(doc: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(doc, Mapping):
            return None
        doc = doc.get(key)
    return doc


def _seconds(stats: Any) -> Quantiles:
    if not isinstance(stats, Mapping):
        return Quantiles()
    factor = _SCALE.get(str(stats.get("units", "s")), 1.0)

    def q(name: str) -> float | None:
        v = stats.get(name)
        return float(v) * factor if isinstance(v, (int, float)) else None

    return Quantiles(q("p50"), q("p90"), q("p99"))


def _mean(stats: Any) -> float | None:
    v = stats.get("mean") if isinstance(stats, Mapping) else stats
    return float(v) if isinstance(v, (int, float)) else None


def _portion(stats: Any) -> float | None:
    v = _mean(stats)
    if v is None:
        return None
    return v / 100.0 if isinstance(stats, Mapping) and stats.get("units") == "percent" else v


def _hit_rate(doc: Mapping[str, Any]) -> float | None:
    obs = _get(doc, "results", "observability") or {}
    for comp in obs.get("components") or ():
        rate = _portion(_get(comp, "aggregate", "cache_hit_rate"))
        if rate is not None:
            return rate
    adhoc = obs.get("vllm_prefix_cache_hit_rate") or {}
    rate = _portion(adhoc.get("aggregated"))
    if rate is None:
        rates = [_portion(c.get("statistics")) for c in adhoc.get("components") or () if isinstance(c, Mapping)]
        rate = rates[0] if rates and rates[0] is not None else None
    return rate


def report_point(doc: Mapping[str, Any], name: str = "") -> RunPoint:
    """One Benchmark Report as a :class:`RunPoint` (ValueError when it is not one)."""
    version = str(doc.get("version", ""))
    if version.startswith("0.2"):
        agg = _get(doc, "results", "request_performance", "aggregate") or {}
        load = _get(doc, "scenario", "load", "standardized") or {}
        tool, stage, rate = load.get("tool"), load.get("stage"), load.get("rate_qps")
        throughput = agg.get("throughput") or {}
        rps, out_tok = _mean(throughput.get("request_rate")), _mean(throughput.get("output_token_rate"))
        label = _get(doc, "run", "description")
    elif version.startswith("0.1"):
        agg = doc.get("metrics") or {}
        tool, stage = _get(doc, "scenario", "load", "name"), None
        rate = _get(doc, "scenario", "load", "args", "qps_values")
        throughput = agg.get("throughput") or {}
        rps, out_tok = _mean(throughput.get("requests_per_sec")), _mean(throughput.get("output_tokens_per_sec"))
        label = _get(doc, "scenario", "description")
    else:
        raise ValueError(f"{name or 'document'} is not a Benchmark Report (version {version or 'missing'})")
    latency = agg.get("latency") or {}
    requests = agg.get("requests") or {}
    if not label:
        label = f"{tool} stage {stage}" if tool and stage is not None else (tool or name or "report")
    tpot = latency.get("time_per_output_token") or latency.get("inter_token_latency")
    return RunPoint(
        policy=str(label), rate=float(rate) if isinstance(rate, (int, float)) else None,
        n=int(requests.get("total") or 0), errors=int(requests.get("failures") or 0),
        ttft=_seconds(latency.get("time_to_first_token")), tpot=_seconds(tpot),
        e2e=_seconds(latency.get("request_latency")), throughput_rps=rps, output_tok_s=out_tok, goodput_rps=None,
        hit_rate=_hit_rate(doc), scale=str(tool) if tool else "benchmark report")


def _documents(src: str | Path | Mapping[str, Any]) -> list[tuple[Mapping[str, Any], str]]:
    if isinstance(src, Mapping):
        return [(src, "")]
    path = Path(src)
    try:
        docs = list(yaml.load_all(path.read_text(), Loader=_Loader))
    except OSError as exc:
        raise ValueError(f"cannot read benchmark report {path}: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise ValueError(f"{path} is not YAML or JSON: {str(exc).splitlines()[0]}") from exc
    flat = [d for doc in docs for d in (doc if isinstance(doc, list) else [doc]) if d is not None]
    if not flat or not all(isinstance(d, Mapping) for d in flat):
        raise ValueError(f"{path} holds no Benchmark Report")
    return [(d, path.stem) for d in flat]


def load_benchmark_reports(*sources: str | Path | Mapping[str, Any]) -> tuple[RunPoint, ...]:
    """Every report of every source, in order."""
    return tuple(report_point(doc, name) for src in sources for doc, name in _documents(src))
