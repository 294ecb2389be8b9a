"""Engines of different block sizes in one pool: the prompt is keyed in each endpoint's own size, so the precise
index (keyed by each engine's KV events), the approximate LRU, the prefix scorer and the cached-token estimate all
count that endpoint's blocks. A single engine of blocks of 32 under a router default of 16 is the real vLLM-on-CPU
case: it must match, not stay cache-blind."""

from __future__ import annotations

import dataclasses

from llmd_kserve.config.build import build_scheduler
from llmd_kserve.kvcache.block_sizes import EngineBlockSizes
from llmd_kserve.kvcache.events import BlockStored
from llmd_kserve.kvcache.hashing import block_keys
from llmd_kserve.kvcache.index import KVIndex
from llmd_kserve.plugins.base import CycleState, HandlerDecision
from llmd_kserve.scheduling.approx_prefix import ApproxPrefixProducer
from llmd_kserve.scheduling.precise_prefix import PrecisePrefixProducer
from llmd_kserve.scheduling.prefix_cache_scorer import PrefixCacheScorer
from llmd_kserve.scheduling.tokenize import TokenizeProducer
from tests.scheduling.sched_fixtures import eid, endpoint, make_ctx, prompt, request

TOKENS = prompt(7, 200)


def _stored(index: KVIndex, i: int, tokens: list[int], size: int) -> None:
    n = len(tokens) // size
    index.apply(eid(i), [BlockStored([1000 * i + k for k in range(n)], None, tokens[: n * size], size)])


def _ctx(index: KVIndex, override: int | None = None):
    return dataclasses.replace(make_ctx(index), block_size_of=EngineBlockSizes(override, index))


def _cycle(ctx, endpoints, tokens=TOKENS) -> CycleState:
    state = CycleState(request("r", tokens), endpoints)
    TokenizeProducer("t", TokenizeProducer.Params(), ctx).produce(state)
    return state


def test_a_pool_of_16_and_32_matches_each_in_its_own_blocks():
    index = KVIndex()
    _stored(index, 0, TOKENS[:160], 16)  # 10 blocks of 16
    _stored(index, 1, TOKENS[:128], 32)  # 4 blocks of 32
    ctx = _ctx(index)
    eps = [endpoint(0, block_size=16), endpoint(1)]  # endpoint 1's size known from its events only
    state = _cycle(ctx, eps)
    assert state.block_sizes == {eid(0): 16, eid(1): 32}
    assert list(state.keys_for(eid(0))) == block_keys(TOKENS, 16)
    assert list(state.keys_for(eid(1))) == block_keys(TOKENS, 32)
    PrecisePrefixProducer("p", PrecisePrefixProducer.Params(speculative_ttl_s=0), ctx).produce(state)
    assert state.prefix_hits["precise"] == {eid(0): 10, eid(1): 4}
    assert state.cached_tokens(eid(0), 16) == 160 and state.cached_tokens(eid(1), 16) == 128
    scores = PrefixCacheScorer("s", PrefixCacheScorer.Params(mode="precise"), ctx).score(state, eps)
    assert scores == {eid(0): 10 / 12, eid(1): 4 / 6}  # of 12 blocks of 16, of 6 blocks of 32


def test_one_engine_of_32_under_a_router_default_of_16_is_not_cache_blind():
    index = KVIndex()
    _stored(index, 0, TOKENS[:192], 32)
    ctx = _ctx(index)  # ctx.block_size stays 16: the size of endpoints not known yet
    sched = build_scheduler("precise-prefix", ctx)
    result = sched.schedule(request("r", TOKENS), [endpoint(1), endpoint(0)])
    assert result.target == eid(0) and result.predicted_cached_tokens == 192
    pinned = build_scheduler("precise-prefix", _ctx(index, override=16))  # --block-size 16: keyed wrong on purpose
    assert pinned.schedule(request("r", TOKENS), [endpoint(0)]).predicted_cached_tokens == 0


def test_approx_records_and_matches_in_the_target_size():
    ctx = _ctx(KVIndex())
    eps = [endpoint(0, block_size=16), endpoint(1, block_size=32)]
    approx = ApproxPrefixProducer("a", ApproxPrefixProducer.Params(), ctx)
    state = _cycle(ctx, eps)
    approx.produce(state)
    approx.on_scheduled(state, HandlerDecision("default", eid(1)))
    again = _cycle(ctx, eps)
    approx.produce(again)
    assert again.prefix_hits["approx"] == {eid(1): 6}  # 6 blocks of 32 recorded (not 12 of 16)
    assert again.cached_tokens(eid(1), 16, "approx") == 192


def test_the_cached_text_keeps_keys_per_size():
    index = KVIndex()
    ctx = _ctx(index)
    producer = TokenizeProducer("t", TokenizeProducer.Params(), ctx)
    text = " ".join(f"w{i}" for i in range(300))
    eps = [endpoint(0, block_size=16), endpoint(1, block_size=32)]
    for _ in range(3):  # seen once, admitted, then a cache hit
        state = CycleState(dataclasses.replace(request("r", ()), token_ids=None, body={"prompt": text}), eps)
        producer.produce(state)
        ids = list(state.token_ids)
        assert list(state.keys_for(eid(0))) == block_keys(ids, 16)
        assert list(state.keys_for(eid(1))) == block_keys(ids, 32)
