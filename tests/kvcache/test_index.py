"""KVIndex: ingestion of engine KV events (golden vLLM 0.26 frames and synthetic), removal, eviction, lookup."""

from __future__ import annotations

import pytest

from llmd_kserve.kvcache.events import AllBlocksCleared, BlockRemoved, BlockStored, EventBatch, decode_payload
from llmd_kserve.kvcache.hashing import block_key, block_keys
from llmd_kserve.kvcache.index import KVIndex
from llmd_kserve.types import EndpointId

A, B, C = EndpointId("http://a:8000"), EndpointId("http://b:8000"), EndpointId("http://c:8000")
BS = 16


def toks(n_blocks: int, start: int = 0) -> list[int]:
    return list(range(start, start + n_blocks * BS))


def stored(hashes, parent, tokens) -> BlockStored:
    return BlockStored(list(hashes), parent, list(tokens), BS)


@pytest.fixture(scope="module")
def golden_batches(golden_frames) -> list[EventBatch]:
    return [decode_payload(p) for _, _, p in golden_frames]


def _reference_model(batches):
    """Independent replay with hashing.block_key: live engine hash -> (router key, depth, parent engine hash)."""
    live: dict[int, tuple[int, int, int | None]] = {}
    for b in batches:
        for ev in b.events:
            if isinstance(ev, BlockStored):
                parent = ev.parent_block_hash
                key, depth = (0, 0) if parent is None else live[parent][:2]
                for i, h in enumerate(ev.block_hashes):
                    key = block_key(key, ev.token_ids[i * BS : (i + 1) * BS])
                    live[h] = (key, depth + i + 1, parent)
                    parent = h
            elif isinstance(ev, BlockRemoved):
                for h in ev.block_hashes:
                    live.pop(h, None)
    return live


def test_golden_frames_index_matches_reference(golden_batches):
    idx = KVIndex()
    for b in golden_batches:
        idx.apply(A, b)
    st = idx.stats()
    assert st.unknown_parents == 0 and st.mismatched == 0 and st.evictions == 0
    assert st.blocks_stored == sum(len(e.block_hashes) for b in golden_batches for e in b.events
                                   if isinstance(e, BlockStored))
    live = _reference_model(golden_batches)
    assert st.entries == len(live)
    assert len(idx) == len({k for k, _, _ in live.values()})
    for key, _, _ in live.values():
        assert idx.holders(key) == [A]


def test_golden_full_prompts_match_router_keys(golden_batches):
    """Keys the router computes from a whole prompt equal the index's chained keys: full-length matches."""
    idx = KVIndex()
    tokens_of: dict[int, tuple[list[int], int]] = {}  # engine hash -> (prompt tokens, tokens up to that block)
    prompts = []
    for b in golden_batches[:40]:
        idx.apply(A, b)
        for ev in b.events:
            if isinstance(ev, BlockStored):
                prefix: list[int] = []
                if ev.parent_block_hash is not None:
                    ptoks, n = tokens_of[ev.parent_block_hash]
                    prefix = ptoks[:n]
                full = prefix + ev.token_ids
                for i, h in enumerate(ev.block_hashes):
                    tokens_of[h] = (full, len(prefix) + (i + 1) * BS)
                prompts.append((ev.block_hashes, full))
    removed = {h for b in golden_batches[:40] for e in b.events if isinstance(e, BlockRemoved) for h in e.block_hashes}
    checked = 0
    for hashes, full in prompts:
        if removed.isdisjoint(hashes) and len(full) > len(hashes) * BS:
            keys = block_keys(full, BS)
            assert idx.match(keys + [42]) == {A: len(keys)}
            checked += 1
    assert checked > 0


def test_golden_first_prompt_then_two_endpoints(golden_batches):
    first = golden_batches[0].events[0]
    keys = block_keys(first.token_ids, BS)
    idx = KVIndex()
    idx.apply(A, golden_batches[0])
    assert idx.match(keys) == {A: len(first.block_hashes)} == {A: 32}
    idx.apply(B, golden_batches[0])
    assert idx.match(keys) == {A: 32, B: 32}
    assert idx.match(keys[:10] + [12345] + keys[11:]) == {A: 10, B: 10}
    assert idx.match(keys, [B, C]) == {B: 32, C: 0}
    assert idx.remove_endpoint(A) and not idx.remove_endpoint(A)
    assert idx.match(keys) == {B: 32}
    # C reuses A's bit and must not inherit anything
    idx.apply(C, [stored([1], None, toks(1, 999))])
    assert idx.match(keys) == {B: 32, C: 0}


def test_unknown_parent_is_skipped_and_counted(golden_batches):
    later = [b for b in golden_batches[1:] if any(isinstance(e, BlockStored) and e.parent_block_hash is not None
                                                   for e in b.events)][0]
    idx = KVIndex()
    idx.apply(A, later)
    assert idx.stats().unknown_parents >= 1


def test_store_remove_clear_and_prefix_semantics():
    t = toks(4)
    keys = block_keys(t, BS)
    idx = KVIndex()
    assert idx.apply(A, [stored([10, 11], None, t[:32]), stored([12, 13], 11, t[32:])]) == 4
    assert idx.match(keys) == {A: 4}
    assert idx.match(keys[:3]) == {A: 3}
    assert idx.match([]) == {A: 0}
    idx.apply(A, [BlockRemoved([11])])
    assert idx.match(keys) == {A: 1}  # leading blocks only
    assert keys[2] in idx
    idx.apply(A, [BlockRemoved([999])])  # unknown hash: ignored
    idx.apply(A, EventBatch(0.0, [AllBlocksCleared()]))
    assert idx.match(keys) == {A: 0}
    assert len(idx) == 0 and idx.stats().entries == 0 and idx.stats().clears == 1


def test_shared_key_survives_removal_on_other_endpoint():
    t = toks(2)
    keys = block_keys(t, BS)
    idx = KVIndex()
    idx.apply(A, [stored([1, 2], None, t)])
    idx.apply(B, [stored([7, 8], None, t)])  # different engine hashes, same tokens -> same router keys
    assert len(idx) == 2
    idx.apply(A, [BlockRemoved([1, 2])])
    assert idx.match(keys) == {A: 0, B: 2}
    assert idx.holders(keys[0]) == [B]


def test_a_block_held_in_two_copies_survives_the_eviction_of_one():
    """vLLM (block_pool.BlockHashToBlockMap) keeps a copy per request that computed the same block at the same time,
    publishes BlockStored for each and BlockRemoved when any one copy is evicted: the block stays until the last."""
    t = toks(2)
    keys = block_keys(t, BS)
    idx = KVIndex()
    idx.apply(A, [stored([1, 2], None, t)])
    idx.apply(A, [stored([1, 2], None, t)])  # a second request computed the same two blocks
    idx.apply(A, [BlockRemoved([1, 2])])  # one copy evicted
    assert idx.match(keys) == {A: 2}
    idx.apply(A, [BlockRemoved([1])])  # the last copy of the first block
    assert idx.match(keys) == {A: 0} and idx.stats().blocks_removed == 3
    idx.apply(A, [stored([1], None, t[:BS]), stored([1], None, t[:BS]), AllBlocksCleared()])
    idx.apply(A, [stored([1], None, t[:BS]), BlockRemoved([1])])  # a clear forgets the copies too
    assert idx.match(keys) == {A: 0}


def test_engine_hash_reused_for_other_tokens_moves_the_key():
    idx = KVIndex()
    idx.apply(A, [stored([1], None, toks(1, 0))])
    idx.apply(A, [stored([1], None, toks(1, 500))])
    assert len(idx) == 1 and block_keys(toks(1, 500), BS)[0] in idx


def test_mismatched_token_count_is_counted():
    idx = KVIndex()
    assert idx.apply(A, [stored([1, 2, 3], None, toks(2))]) == 2
    assert idx.stats().mismatched == 1


def test_seed_changes_keys():
    t = toks(2)
    idx = KVIndex(seed=7)
    idx.apply(A, [stored([1, 2], None, t)])
    assert idx.match(block_keys(t, BS, seed=7)) == {A: 2}
    assert idx.match(block_keys(t, BS)) == {A: 0}


def test_max_keys_bounds_memory(golden_batches):
    idx = KVIndex(max_keys=1000)
    for b in golden_batches[:120]:
        idx.apply(A, b)
        idx.apply(B, b)
        assert len(idx) <= 1000
    st = idx.stats()
    assert st.evictions > 0
    assert st.entries <= 2 * len(idx)
    last = [e for b in golden_batches[:120] for e in b.events if isinstance(e, BlockStored)][-1]
    assert idx.apply(C, [last]) in (0, len(last.block_hashes))  # C never saw the parent, or it is a root


def test_eviction_keeps_recent_and_sweeps_maps():
    idx = KVIndex(max_keys=64, evict_fraction=0.25)
    for i in range(20):  # 20 independent 8-block prompts
        idx.apply(A, [stored(range(i * 100, i * 100 + 8), None, toks(8, i * 10_000))])
    assert len(idx) <= 64
    assert idx.stats().entries == len(idx)
    recent = block_keys(toks(8, 19 * 10_000), BS)
    assert idx.match(recent) == {A: 8}
    oldest = block_keys(toks(8, 0), BS)
    assert idx.match(oldest) == {A: 0}


def test_apply_rejects_non_events():
    with pytest.raises(TypeError):
        KVIndex().apply(A, ["nope"])  # type: ignore[list-item]
    with pytest.raises(ValueError):
        KVIndex(max_keys=0)


def test_endpoints_dropped_at_the_first_key_hold_zero_and_the_rest_continue():
    idx = KVIndex()
    t, u = toks(4), toks(2) + toks(2, start=999)
    idx.apply(A, [stored([1, 2, 3, 4], None, t)])
    idx.apply(B, [stored([5, 6, 7, 8], None, u)])
    idx.apply(C, [stored([9], None, toks(1, start=5000))])
    assert idx.match(block_keys(t, BS), [A, B, C]) == {A: 4, B: 2, C: 0}
    assert idx.match(block_keys(u, BS)) == {A: 2, B: 4, C: 0}
    assert idx.match(block_keys(toks(3, start=7000), BS), [A, B, C]) == {A: 0, B: 0, C: 0}
