"""Consecutive scrapes of a live stack -> ``LiveSample`` windows (pure): counter deltas, histogram quantiles.

A source (Prometheus or the router itself) reads the same totals — counters summed over endpoints, histogram
buckets summed by ``le`` — into a :class:`Scrape`; :class:`LiveWindow` turns each new scrape into the sample of the
window since the previous one (the first sample covers everything since the counters began).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from llmd_kserve.viz.data import EndpointSample, LiveSample, Quantiles, ratio

COUNTERS: dict[str, str] = {
    "engine_hits": "vllm:prefix_cache_hits_total",
    "engine_queries": "vllm:prefix_cache_queries_total",
    "generation_tokens": "vllm:generation_tokens_total",
    "predicted": "llmd_router_predicted_cached_tokens_total",
    "reported": "llmd_router_reported_cached_tokens_total",
    "prompt": "llmd_router_prompt_tokens_total",
    "answered": "llmd_router_requests_total",
    "pd_disaggregated": 'llmd_router_pd_requests_total{mode="disaggregated"}',
    "pd_all": "llmd_router_pd_requests_total",
    "pd_fallbacks": "llmd_router_pd_fallbacks_total",
}
"""Canonical counter name -> the series summed (``answered`` counts only HTTP 200 answers)."""

HISTOGRAMS: dict[str, str] = {
    "ttft": "vllm:time_to_first_token_seconds",
    "tpot": "vllm:request_time_per_output_token_seconds",
    "e2e": "vllm:e2e_request_latency_seconds",
}
"""Latency -> the engines' histogram it is read from."""


@dataclass(frozen=True, slots=True)
class Scrape:
    """Totals at one moment: counters (keys of ``COUNTERS``), cumulative buckets ``{le: count}`` per latency
    (keys of ``HISTOGRAMS``), and each endpoint's current load."""

    time: float
    counters: Mapping[str, float]
    hists: Mapping[str, Mapping[float, float]] = field(default_factory=dict)
    endpoints: tuple[EndpointSample, ...] = ()


def histogram_quantile(q: float, buckets: Mapping[float, float]) -> float | None:
    """Prometheus' ``histogram_quantile``: linear interpolation inside the bucket holding rank ``q·count``;
    None for an empty histogram. ``buckets`` are cumulative counts by upper bound (``inf`` included)."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    total = buckets[bounds[-1]]
    rank = q * total
    prev_bound, prev_count = 0.0, 0.0
    for b in bounds:
        c = buckets[b]
        if c >= rank:
            if math.isinf(b):
                return prev_bound  # Prometheus answers the highest finite bound
            if c == prev_count:
                return b
            return prev_bound + (b - prev_bound) * (rank - prev_count) / (c - prev_count)
        prev_bound, prev_count = b, c
    return prev_bound


def _delta(now: Mapping[float, float], then: Mapping[float, float] | None) -> dict[float, float]:
    if not then:
        return dict(now)
    return {le: max(0.0, c - then.get(le, 0.0)) for le, c in now.items()}


def _quantiles(buckets: Mapping[float, float]) -> Quantiles:
    return Quantiles(*(histogram_quantile(q, buckets) for q in (0.5, 0.9, 0.99)))


class LiveWindow:
    """Keeps the previous scrape; ``update(scrape)`` returns the sample of the window since it."""

    def __init__(self) -> None:
        self.previous: Scrape | None = None
        self.first: Scrape | None = None

    def update(self, now: Scrape, source: str = "") -> LiveSample:
        then = self.previous
        self.previous = now
        if self.first is None:
            self.first = now
        c, p = now.counters, (then.counters if then is not None else {})

        def r(num: str, den: str) -> float | None:
            return ratio(c.get(num, 0.0), p.get(num, 0.0), c.get(den, 0.0), p.get(den, 0.0))

        span = now.time - then.time if then is not None else None
        hists = {k: _delta(v, then.hists.get(k) if then is not None else None) for k, v in now.hists.items()}
        rate = (lambda k: (c.get(k, 0.0) - p.get(k, 0.0)) / span) if span and span > 0 else (lambda k: None)
        return LiveSample(
            time=now.time, hit_rate_engines=r("engine_hits", "engine_queries"), hit_rate_predicted=r("predicted", "prompt"),
            hit_rate_reported=r("reported", "prompt"), ttft=_quantiles(hists.get("ttft", {})),
            tpot=_quantiles(hists.get("tpot", {})), e2e=_quantiles(hists.get("e2e", {})),
            throughput_rps=rate("answered"), output_tok_s=rate("generation_tokens"), endpoints=now.endpoints,
            pd_share=r("pd_disaggregated", "pd_all"), pd_fallbacks=c.get("pd_fallbacks", 0.0), source=source)

    def since_start(self) -> LiveSample | None:
        """One sample over everything between the first and the latest scrape (None before two scrapes)."""
        if self.first is None or self.previous is None or self.first is self.previous:
            return None
        w = LiveWindow()
        w.update(self.first)
        return w.update(self.previous)
