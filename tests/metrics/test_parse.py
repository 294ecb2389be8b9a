"""parse_vllm_metrics on the golden vLLM 0.26 pages and synthetic multi-engine / older-name pages."""

from __future__ import annotations

import pytest

from llmd_kserve.metrics.parse import parse_vllm_metrics
from llmd_kserve.types import EndpointMetrics


def test_golden_page(metrics_text):
    m = parse_vllm_metrics(metrics_text, now=12.5)
    assert m == EndpointMetrics(waiting=0, running=0, kv_usage=0.0, block_size=16, num_gpu_blocks=26962,
                                prefix_queries=663040.0, prefix_hits=115312.0, scraped_at=12.5, stale=False)


def test_golden_page_after_load(metrics_after_load_text):
    m = parse_vllm_metrics(metrics_after_load_text, now=0.0)
    assert (m.block_size, m.num_gpu_blocks, m.prefix_queries, m.prefix_hits) == (16, 6741, 305920.0, 0.0)
    assert not m.stale


PAGE = """\
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="m"} 3.0
vllm:num_requests_waiting{engine="1",model_name="m"} 4.0
vllm:num_requests_waiting_by_reason{engine="0",model_name="m",reason="capacity"} 99.0
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="m"} 5.0
vllm:num_requests_running{engine="1",model_name="m"} 6.0
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.5
vllm:kv_cache_usage_perc{engine="1",model_name="m"} 0.25
# TYPE vllm:prefix_cache_queries counter
vllm:prefix_cache_queries_total{engine="0",model_name="m"} 100.0
vllm:prefix_cache_queries_total{engine="1",model_name="m"} 50.0
vllm:prefix_cache_queries_created{engine="0",model_name="m"} 1.7e+09
vllm:prefix_cache_hits_total{engine="0",model_name="m"} 10.0
vllm:prefix_cache_hits_total{engine="1",model_name="m"} 5.0
vllm:cache_config_info{block_size="32",engine="0",num_gpu_blocks="1000"} 1.0
vllm:cache_config_info{block_size="32",engine="1",num_gpu_blocks="1000"} 1.0
vllm:gpu_cache_usage_perc{engine="0",model_name="m"} 0.9
"""


def test_sums_over_engines_and_mean_usage():
    m = parse_vllm_metrics(PAGE, now=1.0)
    assert (m.waiting, m.running) == (7, 11)
    assert m.kv_usage == pytest.approx(0.375)  # the new name wins over the deprecated one
    assert (m.prefix_queries, m.prefix_hits) == (150.0, 15.0)
    assert (m.block_size, m.num_gpu_blocks) == (32, 2000)


def test_older_metric_names():
    old = """\
vllm:gpu_cache_usage_perc{model_name="m"} 0.75
vllm:gpu_prefix_cache_queries_total{model_name="m"} 20
vllm:gpu_prefix_cache_hits_total{model_name="m"} 8
vllm:num_requests_waiting{model_name="m"} 2
"""
    m = parse_vllm_metrics(old, now=0.0)
    assert (m.kv_usage, m.prefix_queries, m.prefix_hits, m.waiting) == (0.75, 20.0, 8.0, 2)
    assert m.block_size is None and m.num_gpu_blocks is None


def test_not_vllm_page_gives_defaults():
    m = parse_vllm_metrics("# HELP x y\nprocess_cpu_seconds_total 1.0\n", now=3.0)
    assert m == EndpointMetrics(scraped_at=3.0, stale=False)


def test_malformed_line_raises():
    with pytest.raises(ValueError):
        parse_vllm_metrics('vllm:num_requests_waiting{engine="0" 1.0\n', now=0.0)


def test_fast_path_agrees_with_prometheus_parser_and_falls_back_on_unusual_lines():
    plain = ('vllm:num_requests_waiting{engine="0",model_name="m"} 3.0\n'
             'vllm:num_requests_waiting{engine="1",model_name="m"} 2 1700000000000\n'
             'vllm:cache_config_info{block_size="16",num_gpu_blocks="100"} 1.0\n'
             'vllm:kv_cache_usage_perc{engine="0"} NaN\n')
    escaped = plain.replace('model_name="m"} 3.0', 'model_name="a \\"quoted\\" name"} 3.0')
    for text in (plain, escaped):
        m = parse_vllm_metrics(text, 1.0)
        assert (m.waiting, m.block_size, m.num_gpu_blocks, m.kv_usage) == (5, 16, 100, 0.0)
    with pytest.raises(ValueError):
        parse_vllm_metrics("vllm:num_requests_waiting 1_000\n", 1.0)
