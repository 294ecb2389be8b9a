"""BlockPool: prefix hits, LRU eviction order, ref counts, emitted KV events."""

from __future__ import annotations

import pytest

from llmd_kserve.engine_sim.block_pool import BlockPool
from llmd_kserve.kvcache.events import AllBlocksCleared, BlockRemoved, BlockStored


def _cache(pool: BlockPool, hashes: list[int], parent=None) -> list[int]:
    blocks = pool.allocate(len(hashes))
    pool.cache_blocks(blocks, hashes, parent, list(range(len(hashes) * pool.block_size)))
    return blocks


def test_hit_after_free_and_miss_after_eviction():
    pool = BlockPool(5, 2, enable_events=True)  # block 0 is the null block: 4 usable
    a = _cache(pool, [11, 12])
    pool.free(a[::-1])
    assert pool.num_free == 4 and pool.usage == 0.0
    assert pool.lookup([11, 12, 13]) == a  # still cached while free
    pool.touch(a)
    assert pool.num_free == 2 and pool.usage == 0.5
    pool.free(a[::-1])
    fresh = pool.allocate(4)  # takes every block: the never-cached ones first, then evicts the cached ones
    assert fresh[:2] == [3, 4]
    assert pool.lookup([11]) == []
    removed = [e for e in pool.take_events() if isinstance(e, BlockRemoved)]
    assert [e.block_hashes for e in removed] == [[12], [11]]  # tail block evicted first (freed in reverse)


def test_lru_order_across_requests():
    pool = BlockPool(5, 1, enable_events=False)
    a = _cache(pool, [1])
    b = _cache(pool, [2])
    pool.free(b)
    pool.free(a)  # a freed last: most recently used
    pool.allocate(2)  # the two never-used blocks
    (victim,) = pool.allocate(1)
    assert victim == b[0]
    assert pool.lookup([1]) == a and pool.lookup([2]) == []


def test_stored_event_fields():
    pool = BlockPool(8, 4, enable_events=True)
    blocks = pool.allocate(2)
    pool.cache_blocks(blocks, [101, 102], 100, list(range(8)))
    (ev,) = pool.take_events()
    assert isinstance(ev, BlockStored)
    assert ev.block_hashes == [101, 102] and ev.parent_block_hash == 100 and ev.token_ids == list(range(8))
    assert ev.block_size == 4 and ev.medium == "GPU" and ev.extra_keys == [None, None] and ev.group_idx == 0
    assert ev.kv_cache_spec_kind == "full_attention"
    # the same hash computed again by another request is registered as a second copy, announced like vLLM does
    # (BlockHashToBlockMap keeps both; test_vllm_fidelity pins what lookups and eviction then do)
    other = pool.allocate(1)
    pool.cache_blocks(other, [101], None, list(range(4)))
    (dup,) = pool.take_events()
    assert dup.block_hashes == [101] and pool.cached[101] == blocks[0]


def test_reset_refused_while_in_use_then_clears():
    pool = BlockPool(4, 2, enable_events=True)
    a = _cache(pool, [7])
    pool.take_events()
    assert not pool.reset()
    pool.free(a)
    assert pool.reset()
    assert pool.lookup([7]) == [] and isinstance(pool.take_events()[-1], AllBlocksCleared)


def test_allocate_too_many_raises():
    pool = BlockPool(2, 16)
    with pytest.raises(ValueError):
        pool.allocate(3)
