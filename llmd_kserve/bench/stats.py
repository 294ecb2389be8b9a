"""Benchmark statistics: per-request results, SLOs, and the JSON summary (TTFT, TPOT, ITL, E2E, goodput, hit rate).

Public API (pure; all times in seconds)::

    RequestResult        frozen value per request: request_id, ok, error, status, start, ttft, e2e, itl (gaps
                         between streamed chunks), output_tokens, prompt_tokens, cached_tokens (usage, None if the
                         server does not report it), endpoint (x-llmd-endpoint), shed (rejected with 429/503)
                         ``.tpot`` = (e2e - ttft) / (output_tokens - 1)
    SLO(ttft=None, tpot=None)   thresholds; ``SLO.met(result)``
    percentile(values, q) -> float | None        linear interpolation (numpy's default), q in [0, 100]
    summarize(results, wall_s, slo=SLO(), *, engine_hit_rate=None) -> dict
        keys (None where undefined): n, ok, errors, error_rate, shed, shed_rate, wall_s, request_rps,
        ttft_/tpot_/itl_/e2e_ + p50, p90, p95, p99, mean; output_tok_s, input_tok_s, goodput_rps, slo_attainment,
        cache_hit_rate (usage-based, else engine counters), cache_hit_rate_usage, cache_hit_rate_engine,
        endpoints ({endpoint: requests})
    result_to_dict(result) -> dict                  JSON-ready record (``itl`` kept as its mean and p99)
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

SUMMARY_KEYS = ("n", "errors", "ttft_p50", "ttft_p90", "ttft_p99", "ttft_mean", "tpot_p50", "itl_p50", "e2e_p50",
                "output_tok_s", "goodput_rps", "cache_hit_rate")


@dataclass(frozen=True, slots=True)
class RequestResult:
    """What one request measured; ``start`` is seconds since the run began."""

    request_id: str
    ok: bool
    start: float = 0.0
    ttft: float | None = None
    e2e: float | None = None
    itl: tuple[float, ...] = ()
    output_tokens: int = 0
    prompt_tokens: int = 0
    cached_tokens: int | None = None
    endpoint: str | None = None
    error: str | None = None
    status: int | None = None
    shed: bool = False
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def tpot(self) -> float | None:
        if self.ttft is None or self.e2e is None or self.output_tokens < 2:
            return None
        return (self.e2e - self.ttft) / (self.output_tokens - 1)


@dataclass(frozen=True, slots=True)
class SLO:
    """Latency objectives a request must meet to count toward goodput (None = no objective)."""

    ttft: float | None = None
    tpot: float | None = None

    def met(self, r: RequestResult) -> bool:
        if not r.ok:
            return False
        if self.ttft is not None and (r.ttft is None or r.ttft > self.ttft):
            return False
        tpot = r.tpot
        return self.tpot is None or tpot is None or tpot <= self.tpot


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile with linear interpolation between closest ranks; None for no values."""
    if not values:
        return None
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def _dist(prefix: str, values: Sequence[float]) -> dict[str, float | None]:
    out: dict[str, float | None] = {f"{prefix}_p{q}": percentile(values, q) for q in (50, 90, 95, 99)}
    out[f"{prefix}_mean"] = sum(values) / len(values) if values else None
    return out


def _rate(num: float, den: float) -> float | None:
    return num / den if den > 0 else None


def summarize(results: Iterable[RequestResult], wall_s: float, slo: SLO | None = None, *,
              engine_hit_rate: float | None = None) -> dict[str, Any]:
    """Aggregate a run: latency distributions over successful requests, rates over ``wall_s``."""
    rs = list(results)
    slo = slo or SLO()
    ok = [r for r in rs if r.ok]
    n, errors, shed = len(rs), sum(not r.ok for r in rs), sum(r.shed for r in rs)
    with_usage = [r for r in ok if r.cached_tokens is not None and r.prompt_tokens > 0]
    usage_hit = _rate(sum(r.cached_tokens or 0 for r in with_usage), sum(r.prompt_tokens for r in with_usage))
    out: dict[str, Any] = {
        "n": n, "ok": len(ok), "errors": errors, "error_rate": _rate(errors, n) or 0.0,
        "shed": shed, "shed_rate": _rate(shed, n) or 0.0, "wall_s": wall_s,
        "request_rps": _rate(len(ok), wall_s),
    }
    out |= _dist("ttft", [r.ttft for r in ok if r.ttft is not None])
    out |= _dist("tpot", [t for r in ok if (t := r.tpot) is not None])
    out |= _dist("itl", [g for r in ok for g in r.itl])
    out |= _dist("e2e", [r.e2e for r in ok if r.e2e is not None])
    good = sum(slo.met(r) for r in rs)
    out |= {
        "output_tok_s": _rate(sum(r.output_tokens for r in ok), wall_s),
        "input_tok_s": _rate(sum(r.prompt_tokens for r in ok), wall_s),
        "goodput_rps": _rate(good, wall_s),
        "slo_attainment": _rate(good, n),
        "slo": {"ttft": slo.ttft, "tpot": slo.tpot},
        "cache_hit_rate": usage_hit if usage_hit is not None else engine_hit_rate,
        "cache_hit_rate_usage": usage_hit,
        "cache_hit_rate_engine": engine_hit_rate,
        "endpoints": dict(sorted(Counter(r.endpoint for r in rs if r.endpoint).items())),
    }
    return out


def result_to_dict(r: RequestResult) -> dict[str, Any]:
    """A JSON-ready record of one request."""
    return {
        "request_id": r.request_id, "ok": r.ok, "error": r.error, "status": r.status, "shed": r.shed,
        "start": r.start, "ttft": r.ttft, "tpot": r.tpot, "e2e": r.e2e,
        "itl_mean": sum(r.itl) / len(r.itl) if r.itl else None, "itl_p99": percentile(r.itl, 99),
        "output_tokens": r.output_tokens, "prompt_tokens": r.prompt_tokens, "cached_tokens": r.cached_tokens,
        "endpoint": r.endpoint, **r.extra,
    }
