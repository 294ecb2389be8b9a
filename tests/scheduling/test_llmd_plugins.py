"""llm-d v1.0's plugins under their own names and parameters: the affinity filter's gate, llm-d's approximate prefix
producer, the in-flight token view, the token-load and active-request scorers."""

from __future__ import annotations

import pytest

from llmd_kserve.config.build import build_scheduler
from llmd_kserve.config.loader import parse_config
from llmd_kserve.kvcache.hashing import block_keys
from llmd_kserve.plugins.base import CycleState, HandlerDecision
from llmd_kserve.scheduling.approx_cache_producer import MATCH_INFO, ApproxPrefixCacheProducer
from llmd_kserve.scheduling.inflight_tokens import estimated_output, inflight_tokens
from llmd_kserve.types import LLMRequest, RequestOutcome
from tests.scheduling.sched_fixtures import BLOCK, eid, endpoint, make_ctx, prompt

LLMD = "llm-d.ai/v1"


def config(*plugins: tuple[str, dict | None], profile: tuple[str, ...]) -> dict:
    return {"apiVersion": LLMD, "kind": "EndpointPickerConfig",
            "plugins": [{"type": t, **({"parameters": p} if p else {})} for t, p in plugins],
            "schedulingProfiles": [{"name": "default", "plugins": [{"pluginRef": r} for r in profile]}]}


def baseline(filter_params: dict | None = None, producer_params: dict | None = None, clock=None, seed: int = 0):
    cfg = config(("approx-prefix-cache-producer", None), ("inflight-load-producer", producer_params),
                 ("prefix-cache-affinity-filter", filter_params), ("token-load-scorer", None),
                 profile=("prefix-cache-affinity-filter", "token-load-scorer"))
    return build_scheduler(parse_config(cfg), make_ctx(seed=seed, clock=clock))


def req(rid: str, tokens, stream: bool = False, **body) -> LLMRequest:
    return LLMRequest(rid, "m", {"stream": stream, **body}, token_ids=tuple(tokens))


def producer(sched, type_: str):
    return next(p for p in sched.producers if p.type == type_)


def test_sticky_until_the_ttft_gate_breaks():
    """The prompt's holder keeps it while its in-flight tokens cost at most maxTTFTPenaltyMs more than the least
    loaded other endpoint's (tokens / peakPrefillThroughput); past that every endpoint is a candidate again."""
    eps = [endpoint(i, block_size=BLOCK, num_gpu_blocks=10_000) for i in range(3)]
    sched = baseline({"peakPrefillThroughput": 1000, "maxTTFTPenaltyMs": 1000})  # 1000 tokens of slack
    doc = prompt(1, 640)  # ten 64-token blocks
    holder = sched.schedule(req("a", doc + prompt(2, 10)), eps).target  # 650 uncached tokens in flight
    again = sched.schedule(req("b", doc + prompt(3, 10)), eps)  # 650 ms vs 0 ms: within the penalty
    assert again.target == holder and again.scores == {}  # only the holder passed the filter
    sched.schedule(req("c", prompt(4, 400)), [e for e in eps if e.id == holder])  # 10 + 400 more: 1060 tokens
    broke = sched.schedule(req("d", doc + prompt(5, 20)), eps)
    assert set(broke.totals) == {e.id for e in eps}  # gate broken: every endpoint kept and scored
    assert broke.target != holder  # and the token load sends it elsewhere
    patient = baseline({"peakPrefillThroughput": 1000, "maxTTFTPenaltyMs": 5000})
    first = patient.schedule(req("a", doc + prompt(2, 10)), eps).target
    patient.schedule(req("c", prompt(4, 400)), [e for e in eps if e.id == first])
    assert patient.schedule(req("d", doc + prompt(5, 20)), eps).target == first


def test_penalty_zero_always_sticks_and_exploration_skips_the_gate():
    eps = [endpoint(i, block_size=BLOCK) for i in range(3)]
    doc = prompt(1, 640)
    stick = baseline({"maxTTFTPenaltyMs": 0})
    holder = stick.schedule(req("a", doc), eps).target
    for i in range(5):  # no gate: the holder takes every repeat however loaded
        assert stick.schedule(req(f"r{i}", doc + prompt(10 + i, 8)), eps).target == holder
    explore = baseline({"explorationProbability": 1.0})
    explore.schedule(req("a", doc), eps)
    assert set(explore.schedule(req("b", doc), eps).totals) == {e.id for e in eps}
    below = baseline({"affinityThreshold": 0.9})
    holder = below.schedule(req("a", doc), eps).target
    assert set(below.schedule(req("b", doc + prompt(3, 128)), eps).totals) == {e.id for e in eps}  # 10/12 < 0.9


def test_latency_predictor_source_uses_the_latency_profile():
    """``ttftSource: latencyPredictor``: the gate compares this router's predicted TTFTs (seconds -> ms)."""
    eps = [endpoint(0, block_size=BLOCK), endpoint(1, block_size=BLOCK)]
    doc = prompt(1, 640)

    def gate(penalty_ms: float) -> list:
        sched = baseline({"ttftSource": "latencyPredictor", "maxTTFTPenaltyMs": penalty_ms})
        sched.schedule(req("a", doc), eps[:1])  # endpoint 0 holds the prompt and still computes it
        state = CycleState(req("b", doc), eps)
        for p in sched.producers:
            p.produce(state)
        flt = sched.runners["default"].filters[0]
        assert flt.ttft_ms(state, eps[0]) > flt.ttft_ms(state, eps[1]) > 0  # the backlog outweighs the hit
        return [e.id for e in flt.filter(state, eps)]

    assert gate(1.0) == [eps[0].id, eps[1].id]
    assert gate(1000.0) == [eps[0].id]


def test_approx_cache_producer_blocks_caps_and_capacity():
    ctx = make_ctx()
    eps = [endpoint(0, block_size=BLOCK, num_gpu_blocks=8), endpoint(1)]
    prod = ApproxPrefixCacheProducer("p", ApproxPrefixCacheProducer.Params(maxPrefixTokensToMatch=256), ctx)
    assert prod.block_size(eps) == 64  # the engine's 16, raised to llm-d's minimum
    assert prod.block_size([endpoint(0, block_size=128)]) == 128
    tokens = prompt(1, 1000)

    def produced(p: ApproxPrefixCacheProducer, rid: str) -> CycleState:
        state = CycleState(req(rid, tokens), eps)
        state.token_ids, state.block_keys = tokens, block_keys(tokens, BLOCK)
        p.produce(state)
        return state

    state = produced(prod, "a")
    info = state.data[MATCH_INFO]["p"]
    assert (info.total_blocks, info.block_size, dict(info.hits)) == (4, 64, {})  # 256 tokens looked up
    prod.on_scheduled(state, HandlerDecision("default", eps[0].id))
    state = produced(prod, "b")
    info = state.data[MATCH_INFO]["p"]
    assert dict(info.hits) == {eps[0].id: 4} and info.fraction(eps[0].id) == 1.0
    assert info.uncached_tokens(eps[0].id, 1000) == 1000 - 256 and info.uncached_tokens(eps[1].id, 1000) == 1000
    assert dict(state.prefix_hits["approx"]) == {eps[0].id: 16}  # in the router's 16-token blocks

    small = ApproxPrefixCacheProducer("s", ApproxPrefixCacheProducer.Params(
        autoTune=False, lruCapacityPerServer=3, maxPrefixTokensToMatch=256), ctx)
    small.on_scheduled(produced(small, "a"), HandlerDecision("default", eps[0].id))
    assert dict(produced(small, "b").data[MATCH_INFO]["s"].hits) == {}  # 3 of 4 blocks kept: the first went

    odd = ApproxPrefixCacheProducer("q", ApproxPrefixCacheProducer.Params(autoTune=False, blockSizeTokens=100), ctx)
    assert odd.block_size(eps) == 100 and odd._keys(produced(odd, "c"), 100) == block_keys(tokens, 100)
    legacy = ApproxPrefixCacheProducer("r", ApproxPrefixCacheProducer.Params(autoTune=False, blockSize=96), ctx)
    assert legacy.block_size(eps) == 96  # the deprecated name still sets the block size


def test_inflight_tokens_release_the_prompt_when_prefill_is_done():
    """llm-d's view: a streaming request's uncached prompt tokens go when its prefill is predicted done, a whole
    answer's at its end; estimated output tokens stay until the end."""
    now = [0.0]
    sched = baseline(producer_params={"addEstimatedOutputTokens": True, "outputRatio": 0.5,
                                      "maxEstimatedOutputTokens": 300}, clock=lambda: now[0])
    eps = [endpoint(0, block_size=BLOCK)]
    stream, whole = req("s", prompt(1, 1000), stream=True), req("w", prompt(2, 400), max_tokens=50)
    r1 = sched.schedule(stream, eps)
    r2 = sched.schedule(whole, eps)
    inflight = producer(sched, "inflight-load-producer")
    assert inflight.tokens.totals[eid(0)] == (1000 + 300) + (400 + 50)  # output capped by 300 and max_tokens 50
    now[0] = 5.0  # long after both prefills
    state = CycleState(req("x", prompt(3, 10)), eps)
    for p in sched.producers:
        p.produce(state)
    view = inflight_tokens(state)
    assert view is not None and view.tokens[eid(0)] == 300 + (400 + 50)
    assert view.request(eid(0)) == 10 + 5
    sched.on_complete(whole, r2, RequestOutcome(ok=True))
    sched.on_complete(stream, r1, RequestOutcome(ok=True))
    assert inflight.tokens.totals == {}
    assert estimated_output({"max_completion_tokens": 7}, 100, 1.5, None) == 7
    assert estimated_output({}, 100, 1.5, 20) == 20 and estimated_output({}, 0, 1.5, None) == 0


def test_inflight_tokens_pd_prefill_leg_releases_the_prompt():
    sched = baseline()
    eps = [endpoint(0, block_size=BLOCK), endpoint(1, block_size=BLOCK)]
    inflight = producer(sched, "inflight-load-producer")
    state = CycleState(req("a", prompt(1, 500)), eps)
    for p in sched.producers:
        p.produce(state)
    decision = HandlerDecision("decode", eps[0].id, prefill=eps[1].id)
    inflight.on_scheduled(state, decision)
    assert inflight.tokens.totals == {eid(0): 500, eid(1): 500}  # as llm-d: each profile's target is charged
    inflight.on_prefill_complete(state.request, decision, RequestOutcome(ok=True))
    assert inflight.tokens.totals == {}


def test_token_view_kept_only_when_a_plugin_reads_it():
    """Without a reader the token view costs nothing per request; a reload that adds one (the producer reused)
    starts it from the requests in flight, which then release it as they finish."""
    eps = [endpoint(0, block_size=BLOCK), endpoint(1, block_size=BLOCK)]
    ctx = make_ctx()
    plain = build_scheduler(parse_config(config(("inflight-load-producer", None), ("queue-scorer", None),
                                                profile=("queue-scorer",))), ctx)
    inflight = producer(plain, "inflight-load-producer")
    first = req("a", prompt(1, 500))
    r1 = plain.schedule(first, eps)
    assert not inflight.keeps_tokens and inflight.tokens.totals == {}
    assert inflight.load(r1.target).tokens == 500  # the router's own load is kept either way
    state = CycleState(req("x", prompt(2, 10)), eps)
    for p in plain.producers:
        p.produce(state)
    assert inflight_tokens(state) is None

    readers = build_scheduler(parse_config(config(
        ("inflight-load-producer", None), ("queue-scorer", None), ("token-load-scorer", None),
        profile=("queue-scorer", "token-load-scorer"))), ctx, carry_over=plain)
    assert producer(readers, "inflight-load-producer") is inflight and inflight.keeps_tokens
    assert inflight.tokens.totals == {r1.target: 500}  # the request in flight at the reload
    second = req("b", prompt(3, 300))
    r2 = readers.schedule(second, eps)
    assert sum(inflight.tokens.totals.values()) == 800
    plain.on_complete(first, r1, RequestOutcome(ok=True))
    readers.on_complete(second, r2, RequestOutcome(ok=True))
    assert inflight.tokens.totals == {} and inflight.load(r1.target).requests == 0


def test_token_load_scorer_llmd_scale_and_candidates_scale():
    eps = [endpoint(0, block_size=BLOCK), endpoint(1, block_size=BLOCK)]
    cfg = config(("token-load-scorer", {"queueThresholdTokens": 1000}), profile=("token-load-scorer",))
    sched = build_scheduler(parse_config(cfg), make_ctx())
    sched.schedule(req("a", prompt(1, 300)), eps[:1])  # 300 tokens in flight on endpoint 0
    res = sched.schedule(req("b", prompt(2, 100)), eps)
    assert res.scores["default/token-load-scorer"] == {eid(0): pytest.approx(0.6), eid(1): pytest.approx(0.9)}
    big = sched.schedule(req("c", prompt(3, 5000)), eps)
    assert big.scores["default/token-load-scorer"][eid(1)] == 0.0  # capped at the threshold
    relative = config(("token-load-scorer", {"normalize": "candidates"}), profile=("token-load-scorer",))
    rel = build_scheduler(parse_config(relative), make_ctx())
    rel.schedule(req("a", prompt(1, 300)), eps[:1])
    assert rel.schedule(req("b", prompt(2, 100)), eps).scores["default/token-load-scorer"] == {eid(0): 0.0,
                                                                                               eid(1): 1.0}


def test_active_request_scorer_idle_threshold_and_busy_cap():
    eps = [endpoint(i) for i in range(3)]
    cfg = config(("active-request-scorer", {"idleThreshold": 1, "maxBusyScore": 0.5, "requestTimeout": "10s"}),
                 profile=("active-request-scorer",))
    sched = build_scheduler(parse_config(cfg), make_ctx())
    for i in range(4):
        sched.schedule(req(f"a{i}", prompt(i, 20)), eps[:1])
    sched.schedule(req("b", prompt(9, 20)), eps[1:2])
    scores = sched.schedule(req("c", prompt(10, 20)), eps).scores["default/active-request-scorer"]
    assert scores == {eid(0): 0.0, eid(1): 1.0, eid(2): 1.0}  # 4 busy -> 0, 1 idle (<= 1), 0 idle
    sched.schedule(req("d", prompt(11, 20)), eps[1:2])
    scores = sched.schedule(req("e", prompt(12, 20)), eps).scores["default/active-request-scorer"]
    assert scores[eid(1)] == pytest.approx((4 - 2) / 4 * 0.5)


def test_a_profile_without_picker_uses_the_listed_one():
    eps = [endpoint(i, kv_usage=0.1 * i) for i in range(3)]
    cfg = config(("kv-cache-utilization-scorer", None), ("random-picker", None),
                 profile=("kv-cache-utilization-scorer",))
    sched = build_scheduler(parse_config(cfg), make_ctx())
    assert sched.runners["default"].picker.type == "random-picker"
    picks = {sched.schedule(req(str(i), prompt(i, 5)), eps).target for i in range(30)}
    assert len(picks) > 1  # a max-score picker would always take endpoint 0
