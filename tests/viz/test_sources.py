"""Live sources against the local stack of simulated engines: Prometheus and the router agree with the engines'
own counters, a decision's weighted scores add up to the router's logged total, failures are one line."""

from __future__ import annotations

import time
import urllib.request

import pytest

from llmd_kserve.metrics.parse import parse_vllm_metrics
from llmd_kserve.stack import LocalStack, prometheus_available
from llmd_kserve.viz import figures
from llmd_kserve.viz.sources import PrometheusSource, RouterSource, SourceError
from llmd_kserve.viz.sources.window import LiveWindow, Scrape, histogram_quantile

pytestmark = pytest.mark.slow


def _engine_totals(urls: list[str]) -> tuple[float, float]:
    hits = queries = 0.0
    for u in urls:
        with urllib.request.urlopen(u + "/metrics", timeout=5) as resp:
            m = parse_vllm_metrics(resp.read().decode(), 0.0)
        hits, queries = hits + m.prefix_hits, queries + m.prefix_queries
    return hits, queries


def _router_prompt_tokens(router: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(router + "/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == "llmd_router_prompt_tokens_total")


def _wait_seen(prom: PrometheusSource, engine_queries: float, router_prompt: float) -> None:
    """Until Prometheus has scraped the engines' and the router's counters as they are now (they are scraped
    independently, each once a second)."""
    for _ in range(60):
        if ((prom.query("sum(vllm:prefix_cache_queries_total)") or 0.0) >= engine_queries
                and (prom.query("sum(llmd_router_prompt_tokens_total)") or 0.0) >= router_prompt):
            return
        time.sleep(0.25)


def _load(router: str, n: int = 16) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=router + "/v1", api_key="unused")
    model = client.models.list().data[0].id
    system = "You answer questions about routing. " * 60
    for i in range(n):
        client.chat.completions.create(model=model, max_tokens=6, messages=[
            {"role": "system", "content": system + str(i % 3)}, {"role": "user", "content": f"question {i}"}])


@pytest.fixture(scope="module")
def stack():
    with LocalStack(engines=2, prometheus=prometheus_available()) as s:
        yield s


def test_router_source_matches_engines_and_explains_decisions(stack):
    src = RouterSource(stack.router_url, config="default")
    before = src.sample()
    _load(stack.router_url)
    after = src.sample()
    hits, queries = _engine_totals(stack.engine_base_urls)
    assert queries > 0 and after.hit_rate_engines == pytest.approx(hits / queries, abs=0.02)
    assert after.hit_rate_predicted is not None and 0.0 <= after.hit_rate_predicted <= 1.0
    assert after.ttft.p50 is not None and after.throughput_rps and after.throughput_rps > 0
    assert {e.endpoint for e in after.endpoints} == set(stack.engine_base_urls)
    assert before.time < after.time
    for d in src.decisions(limit=5):
        ex = src.explain(d)
        assert ex.target == d["target"]
        for ep, total in ex.totals().items():
            assert total == pytest.approx(d["totals"][ep], abs=1e-9)  # Σ weight·score == the router's total
    fig = figures.decision_explained(src.explain())
    assert [a.x for a in fig.layout.annotations if "winner" in a.text] == [src.explain().target]
    heat = figures.endpoint_heatmap([before, after])
    assert len(heat.data[0].y) == 2


@pytest.mark.skipif(not prometheus_available(), reason="prometheus binary not installed")
def test_prometheus_hit_rate_equals_engine_counters(stack):
    prom = PrometheusSource(stack.prometheus_url)
    prom.wait_ready(targets=3, timeout=30)
    h0, q0 = _engine_totals(stack.engine_base_urls)
    _wait_seen(prom, q0, _router_prompt_tokens(stack.router_url))  # the window must open on current counters
    prom.sample()
    _load(stack.router_url, 12)
    h1, q1 = _engine_totals(stack.engine_base_urls)
    _wait_seen(prom, q1, _router_prompt_tokens(stack.router_url))  # ... and close after both saw the load
    s = prom.sample()
    truth = (h1 - h0) / (q1 - q0)
    assert s.hit_rate_engines is not None and abs(s.hit_rate_engines - truth) <= 0.02  # within 2 points
    assert s.hit_rate_predicted is not None and s.ttft.p90 is not None
    assert {e.endpoint for e in s.endpoints} == set(stack.engine_base_urls)


def test_sources_fail_in_one_line():
    with pytest.raises(SourceError, match=r"^router at 127\.0\.0\.1:1 is not answering") as e:
        RouterSource("http://127.0.0.1:1", timeout=0.5).sample()
    assert "\n" not in str(e.value)
    with pytest.raises(SourceError, match=r"^Prometheus at http://127\.0\.0\.1:1 is not answering") as e:
        PrometheusSource("http://127.0.0.1:1", timeout=0.5).sample()
    assert "\n" not in str(e.value)


def test_window_and_histogram_quantile():
    buckets = {0.1: 50.0, 0.5: 90.0, float("inf"): 100.0}
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.1)
    assert histogram_quantile(0.7, buckets) == pytest.approx(0.1 + 0.4 * 0.5)
    assert histogram_quantile(0.99, buckets) == 0.5  # in +Inf: the highest finite bound, as Prometheus
    assert histogram_quantile(0.5, {float("inf"): 0.0}) is None
    w = LiveWindow()
    first = w.update(Scrape(0.0, {"engine_hits": 10, "engine_queries": 20, "answered": 4}))
    assert first.hit_rate_engines == 0.5 and first.throughput_rps is None
    second = w.update(Scrape(2.0, {"engine_hits": 40, "engine_queries": 60, "answered": 10}))
    assert second.hit_rate_engines == 0.75 and second.throughput_rps == 3.0
    assert w.update(Scrape(3.0, {"engine_hits": 40, "engine_queries": 60})).hit_rate_engines is None
    total = w.since_start()
    assert total is not None and total.hit_rate_engines == 0.75
