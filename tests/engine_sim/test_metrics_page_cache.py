"""The engine's /metrics page is rendered once while nothing it shows changes, and again as soon as anything does."""

from __future__ import annotations

from llmd_kserve.engine_sim.core import EngineCore
from llmd_kserve.engine_sim.metrics import EngineMetrics


def test_page_cached_while_unchanged_and_rerendered_on_any_change(profile):
    m = EngineMetrics(EngineCore(profile, num_blocks=20, block_size=16), "m")
    page = m.render()
    assert m.render() is page  # idle: not rendered again
    m.ttft.observe(0.0)  # a histogram observation whose value leaves the sum unchanged
    assert m.render() is not page and b"vllm:time_to_first_token_seconds_count" in m.render()
    page = m.render()
    m.core.stats.prefix_hits += 16
    assert b'vllm:prefix_cache_hits_total{engine="0",model_name="m"} 16.0' in m.render()
    page = m.render()
    m.success["stop"] += 1
    assert m.render() is not page
