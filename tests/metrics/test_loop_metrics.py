"""``loop_metrics``: the lock-free counter and histogram expose exactly what prometheus_client's own do."""

from __future__ import annotations

import math

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from llmd_kserve.metrics.loop_metrics import LoopCounter, LoopHistogram

_BUCKETS = (1e-4, 1e-3, 1e-2, 0.1, 1.0)
_OBSERVED = [0.0, 5e-5, 1e-4, 1e-4 + 1e-12, 0.003, 0.1, 0.99, 1.0, 7.0, math.inf, -2.0, math.nan]


def _page(counter: type[Counter], histogram: type[Histogram]) -> list[str]:
    r = CollectorRegistry()
    c = counter("reqs", "requests", ["route"], registry=r)
    plain = counter("plain", "no labels", registry=r)
    h = histogram("lat", "latency", buckets=_BUCKETS, registry=r)
    hl = histogram("lat_by", "latency by route", ["route"], buckets=_BUCKETS, registry=r)
    for i, v in enumerate(_OBSERVED):
        c.labels("/a" if i % 3 else "/b").inc(i)
        plain.inc(0.5)
        h.observe(v)
        hl.labels("/a").observe(v)
    h.observe(0.02, {"trace_id": "abc"})
    return [line for line in generate_latest(r).decode().splitlines() if "_created" not in line]


def test_same_exposition_as_prometheus_client() -> None:
    assert _page(LoopCounter, LoopHistogram) == _page(Counter, Histogram)


def test_misuse_raises_as_prometheus_client_does() -> None:
    r = CollectorRegistry()
    c = LoopCounter("c", "c", registry=r)
    with pytest.raises(ValueError):
        c.inc(-1)
    labelled = LoopCounter("l", "l", ["x"], registry=r)
    with pytest.raises(ValueError):
        labelled.inc()  # a labelled parent is not a series
    hist = LoopHistogram("h", "h", ["x"], registry=r)
    with pytest.raises(ValueError):
        hist.observe(1.0)
