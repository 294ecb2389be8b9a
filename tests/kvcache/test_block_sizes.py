"""Each endpoint's block size comes from the engine (KV events, else ``cache_config_info``) unless ``--block-size``
overrides it; unknown and contradicted sizes are said once, not per request."""

from __future__ import annotations

import logging

from llmd_kserve.kvcache.block_sizes import EngineBlockSizes
from llmd_kserve.kvcache.events import BlockStored
from llmd_kserve.kvcache.index import KVIndex
from llmd_kserve.types import Endpoint, EndpointId, EndpointMetrics, EndpointState

EP = EndpointId("http://10.0.0.1:8000")


def _state(block_size: int | None = None) -> EndpointState:
    return EndpointState(Endpoint(EP), EndpointMetrics(block_size=block_size, stale=False))


def _events(index: KVIndex, size: int) -> None:
    index.apply(EP, [BlockStored([1], None, list(range(size)), size)])


def test_events_then_metrics_then_unknown(caplog):
    index = KVIndex()
    sizes = EngineBlockSizes(index=index)
    with caplog.at_level(logging.INFO, "llmd_kserve.kvcache.block_sizes"):
        for _ in range(3):
            assert sizes(_state()) is None
        assert sum("not known yet" in r.getMessage() for r in caplog.records) == 1
        assert sizes(_state(32)) == 32
        assert sizes.describe(_state(32)) == {"block_size": 32, "source": "metrics", "engine_block_size": 32}
        _events(index, 64)  # what the index keys its blocks in wins over the metrics label
        assert sizes(_state(32)) == 64 and sizes(_state(32)) == 64
    said = [r.getMessage() for r in caplog.records]
    assert said[1:] == [f"KV block size of {EP}: 32 (from its metrics)", f"KV block size of {EP}: 64 (from its kv-events)"]


def test_the_flag_overrides_and_a_contradiction_is_warned_once(caplog):
    index = KVIndex()
    sizes = EngineBlockSizes(16, index)
    with caplog.at_level(logging.INFO, "llmd_kserve.kvcache.block_sizes"):
        assert sizes(_state()) == 16 and not caplog.records  # nothing reported yet: nothing to say
        assert sizes(_state(16)) == 16
        _events(index, 32)
        for _ in range(3):
            assert sizes(_state(16)) == 16
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "--block-size 16 overrides" in warnings[0] and "32" in warnings[0]
    sizes.forget(EP)
    assert sizes.describe(_state()) == {"block_size": 16, "source": "flag", "engine_block_size": 32}


def test_the_index_forgets_a_removed_endpoint_block_size():
    index = KVIndex()
    _events(index, 32)
    assert index.block_size(EP) == 32
    index.remove_endpoint(EP)
    assert index.block_size(EP) is None
