"""A real vLLM 0.32 ``/metrics`` page (``tests/golden/vllm-0.32``) through the router's parser: the block size comes
from ``vllm:cache_config_info`` (32 on that CPU engine), the load and prefix-cache counters from their 0.32 names."""

from __future__ import annotations

from llmd_kserve.metrics.parse import parse_vllm_page
from tests.wire import golden032_text


def test_fresh_page():
    m, seen = parse_vllm_page(golden032_text("metrics_fresh.txt"), now=5.0)
    assert m.block_size == 32 and m.num_gpu_blocks == 512
    assert (m.waiting, m.running, m.kv_usage, m.prefix_queries, m.prefix_hits) == (0, 0, 0.0, 0.0, 0.0)
    assert not m.stale and m.scraped_at == 5.0
    assert "vllm:cache_config_info" in seen and "vllm:prefix_cache_hits_total" in seen
    assert "vllm:gpu_cache_usage_perc" not in seen  # 0.32 has only the new names


def test_page_after_load_reads_the_counters_not_the_new_lookalike_series():
    text = golden032_text("metrics_after_load.txt")
    m, _ = parse_vllm_page(text, now=1.0)
    assert (m.prefix_queries, m.prefix_hits) == (23874.0, 1536.0)
    assert m.block_size == 32 and m.num_gpu_blocks == 512
    # series 0.32 added beside them (by reason, by source, external cache) must not be summed into these
    for extra in ("vllm:num_requests_waiting_by_reason", "vllm:external_prefix_cache_hits_total",
                  "vllm:prompt_tokens_by_source_total", "vllm:prefix_cache_queries_created"):
        assert extra in text
