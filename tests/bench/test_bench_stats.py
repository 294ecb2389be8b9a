"""summarize() on handmade results."""

from __future__ import annotations

import json

import pytest

from llmd_kserve.bench.stats import SLO, SUMMARY_KEYS, RequestResult, percentile, result_to_dict, summarize


def _ok(i, ttft, e2e, out=11, cached=None, endpoint="http://a"):
    return RequestResult(f"r{i}", True, start=float(i), ttft=ttft, e2e=e2e, itl=(0.1,) * (out - 1),
                         output_tokens=out, prompt_tokens=100, cached_tokens=cached, endpoint=endpoint)


def test_percentile_matches_linear_interpolation():
    assert percentile([], 50) is None
    assert percentile([3.0], 99) == 3.0
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile(list(range(101)), 90) == pytest.approx(90)


def test_summarize_handmade():
    rs = [
        _ok(0, 0.1, 1.1, cached=50),
        _ok(1, 0.2, 1.2, cached=0, endpoint="http://b"),
        _ok(2, 0.9, 1.9, cached=100),
        RequestResult("r3", False, error="HTTP 503", status=503, shed=True),
    ]
    s = summarize(rs, wall_s=2.0, slo=SLO(ttft=0.5, tpot=0.2))
    assert set(SUMMARY_KEYS) <= set(s)
    assert s["n"] == 4 and s["errors"] == 1 and s["shed"] == 1 and s["shed_rate"] == 0.25
    assert s["ttft_p50"] == pytest.approx(0.2) and s["ttft_mean"] == pytest.approx(0.4)
    assert s["tpot_p50"] == pytest.approx(0.1) and s["itl_p50"] == pytest.approx(0.1)
    assert s["e2e_p50"] == pytest.approx(1.2)
    assert s["output_tok_s"] == pytest.approx(33 / 2.0)
    assert s["goodput_rps"] == pytest.approx(2 / 2.0) and s["slo_attainment"] == 0.5
    assert s["cache_hit_rate"] == pytest.approx(150 / 300)
    assert s["endpoints"] == {"http://a": 2, "http://b": 1}
    json.dumps(s)
    json.dumps([result_to_dict(r) for r in rs])


def test_summarize_engine_hit_rate_fallback_and_empty():
    s = summarize([_ok(0, 0.1, 1.0)], wall_s=1.0, engine_hit_rate=0.4)
    assert s["cache_hit_rate"] == 0.4 and s["cache_hit_rate_usage"] is None
    assert s["goodput_rps"] == 1.0  # no SLO: every successful request counts
    e = summarize([], wall_s=0.0)
    assert e["n"] == 0 and e["ttft_p50"] is None and e["output_tok_s"] is None
