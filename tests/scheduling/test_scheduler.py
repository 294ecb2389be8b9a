"""Behaviour of the Scheduler with the shipped configs and individual plugins."""

from __future__ import annotations

from collections import Counter

import pytest

from llmd_kserve.builtin import REGISTRY
from llmd_kserve.config.build import build_scheduler
from llmd_kserve.config.loader import parse_config
from llmd_kserve.errors import NoEndpointError
from llmd_kserve.types import RequestOutcome
from tests.scheduling.sched_fixtures import BLOCK, eid, endpoint, make_ctx, prompt, request, store


def one_profile(*plugins: tuple[str, dict | None, float | None]) -> dict:
    """A config with one profile using ``(type, parameters, weight)`` plugins."""
    return {
        "plugins": [{"type": t, "parameters": p} for t, p, _ in plugins],
        "schedulingProfiles": [
            {"name": "default", "plugins": [{"pluginRef": t, **({"weight": w} if w is not None else {})}
                                            for t, _, w in plugins if REGISTRY[t].kind != "producer"]}
        ],
    }


def test_precise_prefix_picks_the_holder(index):
    eps = [endpoint(i) for i in range(4)]
    tokens = prompt(1, 1000)
    store(index, eps[2].id, tokens[:800])
    sched = build_scheduler("precise-prefix", make_ctx(index))
    res = sched.schedule(request("r1", tokens), eps)
    assert res.target == eps[2].id
    assert res.prompt_tokens == 1000
    assert res.predicted_cached_tokens == 800
    assert res.scores["default/precise-prefix-cache-scorer"][eps[2].id] == pytest.approx(800 / 992)
    assert set(res.totals) == {e.id for e in eps}
    assert res.profile == "default" and res.prefill is None


def test_precise_prefix_leaves_a_loaded_holder(index):
    eps = [endpoint(0, waiting=20, kv_usage=0.95), endpoint(1), endpoint(2)]
    tokens = prompt(2, 400)
    store(index, eps[0].id, tokens[:64])  # a short shared prefix on an overloaded endpoint
    res = build_scheduler("precise-prefix", make_ctx(index)).schedule(request("r", tokens), eps)
    assert res.target != eps[0].id


def test_approx_prefix_learns_where_it_sent_a_prefix():
    eps = [endpoint(i) for i in range(8)]
    sched = build_scheduler("approx-prefix", make_ctx(seed=3))
    system = prompt(3, 512)
    first = sched.schedule(request("a", system + prompt(4, 50)), eps)
    for i in range(10):
        assert sched.schedule(request(f"b{i}", system + prompt(10 + i, 50)), eps).target == first.target
    sched.remove_endpoint(first.target)
    others = [e for e in eps if e.id != first.target]
    res = sched.schedule(request("c", system), others)
    assert res.predicted_cached_tokens == 0


def test_approx_prefix_lru_capacity_from_metrics():
    eps = [endpoint(0, num_gpu_blocks=40), endpoint(1, num_gpu_blocks=40)]
    sched = build_scheduler("approx-prefix", make_ctx())
    a, b = prompt(5, 32 * BLOCK), prompt(6, 32 * BLOCK)
    first = sched.schedule(request("a", a), eps).target
    sched.schedule(request("b", b), [e for e in eps if e.id == first])  # pushes most of `a` out of the 40-block LRU
    res = sched.schedule(request("a2", a), eps)
    assert res.predicted_cached_tokens == 0 or res.target != first


def test_round_robin_cycles():
    eps = [endpoint(i) for i in range(3)]
    sched = build_scheduler("round-robin", make_ctx())
    targets = [sched.schedule(request(str(i), prompt(i, 20)), eps).target for i in range(9)]
    assert targets == [e.id for e in eps] * 3


def test_random_is_seeded():
    eps = [endpoint(i) for i in range(5)]

    def run(seed):
        sched = build_scheduler("random", make_ctx(seed=seed))
        return [sched.schedule(request(str(i), prompt(i, 20)), eps).target for i in range(50)]

    assert run(7) == run(7)
    assert run(7) != run(8)
    assert len(set(run(7))) == 5


def test_exclude_and_no_endpoint():
    eps = [endpoint(0), endpoint(1)]
    sched = build_scheduler("load-only", make_ctx())
    assert sched.schedule(request("r", prompt(1, 40)), eps, exclude={eps[0].id}).target == eps[1].id
    with pytest.raises(NoEndpointError):
        sched.schedule(request("r", prompt(1, 40)), eps, exclude={eps[0].id, eps[1].id})
    with pytest.raises(NoEndpointError, match="decode-filter"):
        sched.schedule(request("r", prompt(1, 40)), [endpoint(2, role="prefill")])


def test_decode_filter_keeps_decode_and_both():
    eps = [endpoint(0, role="prefill"), endpoint(1, role="decode"), endpoint(2, role="both")]
    sched = build_scheduler("round-robin", make_ctx())
    assert {sched.schedule(request(str(i), prompt(i, 20)), eps).target for i in range(6)} == {eps[1].id, eps[2].id}


def test_inflight_load_spreads_a_burst_and_on_complete_releases_it():
    eps = [endpoint(i) for i in range(4)]
    sched = build_scheduler("load-only", make_ctx())
    reqs = [request(str(i), prompt(i, 100)) for i in range(8)]
    results = [sched.schedule(r, eps) for r in reqs]
    assert Counter(r.target for r in results) == Counter({e.id: 2 for e in eps})  # metrics unchanged, router knows
    producer = next(p for p in sched.producers if p.type == "inflight-load-producer")
    assert producer.load(eps[0].id)[0] == 2
    for r, res in zip(reqs, results, strict=True):
        sched.on_complete(r, res, RequestOutcome(ok=True, prompt_tokens=100))
    assert all(producer.load(e.id) == (0, 0) for e in eps)


def test_inflight_entries_expire_on_the_clock():
    now = [0.0]
    cfg = one_profile(("inflight-load-producer", {"requestTimeoutS": 10}, None), ("active-request-scorer", None, 1))
    sched = build_scheduler(parse_config(cfg), make_ctx(clock=lambda: now[0]))
    eps = [endpoint(0), endpoint(1)]
    sched.schedule(request("a", prompt(1, 50)), eps)
    now[0] = 11.0
    res = sched.schedule(request("b", prompt(2, 50)), eps)
    assert set(res.scores["default/active-request-scorer"].values()) == {1.0}  # "a" expired: both idle
    producer = next(p for p in sched.producers if p.type == "inflight-load-producer")
    assert sum(producer.load(e.id)[0] for e in eps) == 1


def test_health_filter_drops_stale_but_never_all():
    cfg = one_profile(("health-filter", None, None), ("round-robin-picker", None, None))
    sched = build_scheduler(parse_config(cfg), make_ctx())
    fresh, stale = endpoint(0), endpoint(1, stale=True)
    assert {sched.schedule(request(str(i), []), [fresh, stale]).target for i in range(4)} == {fresh.id}
    all_stale = [endpoint(1, stale=True), endpoint(2, stale=True)]
    assert {sched.schedule(request(str(i), []), all_stale).target for i in range(4)} == {e.id for e in all_stale}


def test_health_filter_max_staleness_uses_the_clock():
    cfg = one_profile(("health-filter", {"maxStalenessS": 1.0}, None))
    sched = build_scheduler(parse_config(cfg), make_ctx(clock=lambda: 10.0))
    old, new = endpoint(0, scraped_at=8.0), endpoint(1, scraped_at=9.5)
    assert sched.schedule(request("r", []), [old, new]).target == new.id


def affinity_scheduler(index, **params):
    cfg = one_profile(
        ("prefix-affinity-filter", params, None),
        ("predicted-ttft-scorer", None, 1),
    )
    return build_scheduler(parse_config(cfg), make_ctx(index))


def test_prefix_affinity_filter_sticks_while_not_saturated(index):
    eps = [endpoint(i) for i in range(3)]
    system = prompt(9, 2048)
    store(index, eps[0].id, system)
    sched = affinity_scheduler(index)
    res = sched.schedule(request("r", system + prompt(10, 30)), eps)
    assert res.target == eps[0].id
    assert set(res.totals) == {eps[0].id}  # the filter kept the holder only


def test_prefix_affinity_filter_releases_when_saturated(index):
    eps = [endpoint(0, waiting=200), endpoint(1), endpoint(2)]  # the holder has a long queue
    system = prompt(9, 2048)
    store(index, eps[0].id, system)
    sched = affinity_scheduler(index, tokensPerWaitingRequest=2048)
    res = sched.schedule(request("r", system + prompt(10, 30)), eps)
    assert set(res.totals) == {e.id for e in eps}
    assert res.target != eps[0].id


def test_prefix_affinity_threshold(index):
    eps = [endpoint(i) for i in range(3)]
    tokens = prompt(11, 1024)
    store(index, eps[1].id, tokens[:256])  # a quarter of the prompt
    assert set(affinity_scheduler(index, threshold=0.5).schedule(request("r", tokens), eps).totals) == {
        e.id for e in eps
    }
    assert set(affinity_scheduler(index, threshold=0.2).schedule(request("r", tokens), eps).totals) == {eps[1].id}


def test_predicted_ttft_prefers_cached_then_idle(index):
    eps = [endpoint(i) for i in range(3)]
    tokens = prompt(12, 4096)
    store(index, eps[1].id, tokens)
    cfg = one_profile(("predicted-ttft-scorer", None, 1))
    sched = build_scheduler(parse_config(cfg), make_ctx(index))
    res = sched.schedule(request("r", tokens), eps)
    scores = res.scores["default/predicted-ttft-scorer"]
    assert res.target == eps[1].id and scores[eps[1].id] == 1.0
    assert scores[eps[0].id] == pytest.approx(scores[eps[2].id]) and scores[eps[0].id] < 0.5
    busy = [endpoint(0, waiting=50), endpoint(1, waiting=50), endpoint(2)]
    res = sched.schedule(request("s", prompt(13, 4096)), busy)
    assert res.target == eps[2].id


def test_session_affinity_follows_the_session():
    eps = [endpoint(i) for i in range(4)]
    cfg = one_profile(("session-affinity-scorer", None, 5), ("token-load-scorer", None, 1))
    sched = build_scheduler(parse_config(cfg), make_ctx())
    first = sched.schedule(request("a", prompt(1, 500), session_id="s1"), eps).target
    for i in range(5):
        assert sched.schedule(request(f"b{i}", prompt(2 + i, 50), headers={"X-Session-Id": "s1"}), eps).target == first
    assert sched.schedule(request("c", prompt(9, 50)), eps).target != first  # token load steers newcomers away
    sched.remove_endpoint(first)
    rest = [e for e in eps if e.id != first]
    assert sched.schedule(request("d", prompt(10, 50), session_id="s1"), rest).target in {e.id for e in rest}


def test_tokenize_text_and_chat_bodies():
    from llmd_kserve.types import LLMRequest

    sched = build_scheduler("round-robin", make_ctx())
    eps = [endpoint(0)]
    text = "hello world " * 40
    comp = LLMRequest("a", "m", {"prompt": text})
    chat = LLMRequest("b", "m", {"messages": [{"role": "user", "content": text}]}, kind="chat")
    ids = LLMRequest("c", "m", {"prompt": [5, 6, 7]})
    assert sched.schedule(comp, eps).prompt_tokens == len(make_ctx().tokenizer.encode(text))
    assert sched.schedule(chat, eps).prompt_tokens > sched.schedule(comp, eps).prompt_tokens
    assert sched.schedule(ids, eps).prompt_tokens == 3


def test_weighted_random_follows_the_totals():
    eps = [endpoint(0, kv_usage=0.0), endpoint(1, kv_usage=0.75)]
    cfg = one_profile(("kv-cache-utilization-scorer", None, 1), ("weighted-random-picker", None, None))
    sched = build_scheduler(parse_config(cfg), make_ctx(seed=1))
    counts = Counter(sched.schedule(request(str(i), []), eps).target for i in range(2000))
    assert counts[eid(0)] / counts[eid(1)] == pytest.approx(4.0, rel=0.25)


def test_every_shipped_config_schedules(index):
    from llmd_kserve.config.loader import shipped_configs

    eps = [endpoint(i, waiting=i, kv_usage=i / 10, num_gpu_blocks=1000) for i in range(4)]
    for name in shipped_configs():
        sched = build_scheduler(name, make_ctx(index))
        res = sched.schedule(request("r", prompt(1, 300)), eps)
        assert res.target in {e.id for e in eps}
        assert res.profile in sched.profile_names
        assert all(k.split("/", 1)[0] in sched.profile_names for k in res.scores)
        sched.on_complete(request("r", prompt(1, 300)), res, RequestOutcome(ok=True))


def test_index_seed_must_match_the_context():
    from llmd_kserve.errors import ConfigError
    from llmd_kserve.kvcache.index import KVIndex

    with pytest.raises(ConfigError, match="seed"):
        build_scheduler("precise-prefix", make_ctx(KVIndex(max_keys=10, seed=7)))
