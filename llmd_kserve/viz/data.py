"""Typed records between the data sources and the figures (optuna's "info object"): frozen, pure, JSON-free.

Records::

    Quantiles(p50, p90, p99)                       seconds; None where a run had no such value
    RunPoint                                       one benchmark run (policy, offered rate, latencies, rates, SLO)
    EndpointSample(endpoint, waiting, running, kv_usage, role)
    LiveSample                                     one refresh of a live stack: hit rates, quantiles, throughput,
                                                   per-endpoint load, P/D share and fallbacks
    Contribution(plugin, endpoint, raw, weight, weighted)
    DecisionExplained                              one routing decision, each scorer's weighted share per candidate

Pure functions (no I/O)::

    run_points(report) -> tuple[RunPoint, ...]     from the bench JSON document (one run, a sweep, several policies)
    by_policy(points) -> {policy: [RunPoint sorted by rate]}
    pareto_front(points) -> list[RunPoint]         throughput up, TTFT p90 down
    ratio(num_now, num_then, den_now, den_then)    a windowed rate of two counters (None when nothing moved)
    profile_weights(config) -> {"profile/scorer": weight}
    explain_decision(decision, weights) -> DecisionExplained   from one ``/debug/decisions`` item

The sources (:mod:`llmd_kserve.viz.sources`) build these records; :mod:`llmd_kserve.viz.figures` draws them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from llmd_kserve.config.schema import SchedulerConfig


@dataclass(frozen=True, slots=True)
class Quantiles:
    """p50/p90/p99 of one latency, in seconds."""

    p50: float | None = None
    p90: float | None = None
    p99: float | None = None

    def get(self, q: str) -> float | None:
        return {"p50": self.p50, "p90": self.p90, "p99": self.p99}[q]


@dataclass(frozen=True, slots=True)
class RunPoint:
    """One benchmark run, as the figures need it. ``rate`` is the offered request rate (None: closed loop)."""

    policy: str
    rate: float | None
    n: int
    errors: int
    ttft: Quantiles
    tpot: Quantiles
    e2e: Quantiles
    throughput_rps: float | None
    """Successful requests per second."""
    output_tok_s: float | None
    goodput_rps: float | None
    """Requests per second that met the SLO."""
    hit_rate: float | None
    slo_ttft: float | None = None
    slo_tpot: float | None = None
    scale: str | None = None
    shed: int = 0

    @property
    def label(self) -> str:
        return self.policy if not self.scale else f"{self.policy} · {self.scale}"


@dataclass(frozen=True, slots=True)
class EndpointSample:
    """One endpoint's load at one refresh: queued and running requests, KV-cache use in [0, 1]."""

    endpoint: str
    waiting: float
    running: float
    kv_usage: float
    role: str = "both"


@dataclass(frozen=True, slots=True)
class LiveSample:
    """One refresh of a live stack. Rates and quantiles are over the source's window (None when nothing moved).

    ``hit_rate_engines`` is the engines' own truth (``vllm:prefix_cache_hits / queries``); ``hit_rate_predicted``
    and ``hit_rate_reported`` are the router's view (``llmd_router_predicted_cached_tokens`` and the engines'
    ``usage.cached_tokens`` it relayed, over ``llmd_router_prompt_tokens``)."""

    time: float
    hit_rate_engines: float | None
    hit_rate_predicted: float | None
    hit_rate_reported: float | None
    ttft: Quantiles
    tpot: Quantiles
    e2e: Quantiles
    throughput_rps: float | None
    output_tok_s: float | None
    endpoints: tuple[EndpointSample, ...] = ()
    pd_share: float | None = None
    """Share of requests prefilled remotely (``llmd_router_pd_requests_total{mode="disaggregated"}``)."""
    pd_fallbacks: float = 0.0
    source: str = ""


@dataclass(frozen=True, slots=True)
class Contribution:
    """One scorer's part of one candidate's total: ``weighted = weight * clamp(raw, 0, 1)``."""

    plugin: str
    endpoint: str
    raw: float
    weight: float
    weighted: float


@dataclass(frozen=True, slots=True)
class DecisionExplained:
    """One routing decision: every scorer's weighted score per candidate of the primary profile, the winner."""

    request_id: str
    """The client's ``x-request-id`` when it sent one (what the user knows), else the router's own id."""
    profile: str
    target: str
    prefill: str | None
    candidates: tuple[str, ...]
    contributions: tuple[Contribution, ...]
    logged_totals: Mapping[str, float]
    """The totals the router logged for this decision."""
    predicted_cached_tokens: int | None = None
    reported_cached_tokens: int | None = None
    prompt_tokens: int | None = None

    def totals(self) -> dict[str, float]:
        """Σ weighted contributions per candidate (equals ``logged_totals`` when the weights are the router's)."""
        out = dict.fromkeys(self.candidates, 0.0)
        for c in self.contributions:
            out[c.endpoint] = out.get(c.endpoint, 0.0) + c.weighted
        return out


def _q(summary: Mapping[str, Any], prefix: str) -> Quantiles:
    return Quantiles(summary.get(f"{prefix}_p50"), summary.get(f"{prefix}_p90"), summary.get(f"{prefix}_p99"))


def _offered(run: Mapping[str, Any]) -> float | None:
    if run.get("offered_rps") is not None:
        return float(run["offered_rps"])
    label = str(run.get("arrival") or "")  # ArrivalSpec.label: "poisson@8/s", "constant@2.5/s", "concurrency=4"
    if "@" in label and label.endswith("/s"):
        try:
            return float(label.split("@", 1)[1][:-2])
        except ValueError:
            return None
    return None


def run_points(report: Mapping[str, Any]) -> tuple[RunPoint, ...]:
    """Every ``runs[]`` item of a bench JSON document as a :class:`RunPoint` (raises ValueError if it is not one)."""
    runs = report.get("runs") if isinstance(report, Mapping) else None
    if not isinstance(runs, list):
        raise ValueError("not a bench report: no 'runs' list")
    out = []
    for i, run in enumerate(runs):
        s = run.get("summary")
        if not isinstance(s, Mapping):
            raise ValueError(f"runs[{i}] has no 'summary'")
        slo = s.get("slo") or {}
        out.append(RunPoint(
            policy=str(run.get("policy", "run")), rate=_offered(run), n=int(s.get("n") or 0),
            errors=int(s.get("errors") or 0), ttft=_q(s, "ttft"), tpot=_q(s, "tpot"), e2e=_q(s, "e2e"),
            throughput_rps=s.get("request_rps"), output_tok_s=s.get("output_tok_s"), goodput_rps=s.get("goodput_rps"),
            hit_rate=s.get("cache_hit_rate"), slo_ttft=slo.get("ttft"), slo_tpot=slo.get("tpot"),
            scale=run.get("scale"), shed=int(s.get("shed") or 0)))
    return tuple(out)


def by_policy(points: Iterable[RunPoint]) -> dict[str, list[RunPoint]]:
    """Runs grouped by label (policy and scale), each group sorted by offered rate (closed-loop runs last)."""
    groups: dict[str, list[RunPoint]] = {}
    for p in points:
        groups.setdefault(p.label, []).append(p)
    for runs in groups.values():
        runs.sort(key=lambda p: (p.rate is None, p.rate or 0.0))
    return groups


def pareto_front(points: Sequence[RunPoint]) -> list[RunPoint]:
    """The runs no other run beats on both throughput (higher) and TTFT p90 (lower), by throughput."""
    pts = [p for p in points if p.throughput_rps is not None and p.ttft.p90 is not None]
    front = [p for p in pts if not any(
        o is not p and o.throughput_rps >= p.throughput_rps and o.ttft.p90 <= p.ttft.p90  # type: ignore[operator]
        and (o.throughput_rps > p.throughput_rps or o.ttft.p90 < p.ttft.p90) for o in pts)]  # type: ignore[operator]
    return sorted(front, key=lambda p: p.throughput_rps or 0.0)


def ratio(num_now: float, num_then: float, den_now: float, den_then: float) -> float | None:
    """(Δ numerator) / (Δ denominator) of two counters; None when the denominator did not move."""
    den = den_now - den_then
    return (num_now - num_then) / den if den > 0 else None


def profile_weights(config: SchedulerConfig) -> dict[str, float]:
    """``"<profile>/<scorer name>" -> weight`` for every plugin a profile references (the keys of
    ``/debug/decisions`` scores); filters and pickers get weight 0 but never appear in scores."""
    return {f"{p.name}/{ref.plugin_ref}": 1.0 if ref.weight is None else float(ref.weight)
            for p in config.scheduling_profiles for ref in p.plugins}


def explain_decision(decision: Mapping[str, Any], weights: Mapping[str, float]) -> DecisionExplained:
    """One ``/debug/decisions`` item with the config's weights: each primary-profile scorer's weighted score per
    candidate (the router's total is Σ weight·clamp(raw, 0, 1))."""
    profile = str(decision["profile"])
    totals = {str(k): float(v) for k, v in (decision.get("totals") or {}).items()}
    candidates = tuple(totals)
    contributions = []
    for key, per_ep in (decision.get("scores") or {}).items():
        prof, _, plugin = str(key).partition("/")
        if prof != profile:
            continue
        if key not in weights:
            raise ValueError(f"no weight for scorer {key!r}: is this the router's config?")
        w = float(weights[key])
        for ep in candidates:
            raw = float(per_ep.get(ep, 0.0))
            contributions.append(Contribution(plugin, ep, raw, w, w * min(1.0, max(0.0, raw))))
    return DecisionExplained(
        request_id=str(decision.get("client_request_id") or decision.get("request_id", "")), profile=profile, target=str(decision["target"]),
        prefill=decision.get("prefill"), candidates=candidates, contributions=tuple(contributions),
        logged_totals=totals, predicted_cached_tokens=decision.get("predicted_cached_tokens"),
        reported_cached_tokens=decision.get("reported_cached_tokens"), prompt_tokens=decision.get("prompt_tokens"))
