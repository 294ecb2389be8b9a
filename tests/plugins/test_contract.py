"""Contract tests over every registered plugin: score range, keys ⊆ candidates, determinism with a seed."""

from __future__ import annotations

import math
import random

import pytest

from llmd_kserve.builtin import BUILTIN_DECIDERS, BUILTINS, REGISTRY
from llmd_kserve.config.build import build_scheduler
from llmd_kserve.config.loader import parse_config
from llmd_kserve.disagg.deciders import build_decider
from llmd_kserve.kvcache.index import KVIndex
from llmd_kserve.plugins.base import KIND_PROTOCOLS, CycleState, HandlerDecision, ProfileResult
from llmd_kserve.types import RequestOutcome
from tests.scheduling.sched_fixtures import endpoint, make_ctx, prompt, request, store

ALL = sorted(REGISTRY)
SEEDS = range(6)
ROLES = ("both", "both", "decode", "prefill")
EVERY_PRODUCER = {
    "plugins": [{"type": t} for t, i in REGISTRY.items() if i.kind == "producer"],
    "schedulingProfiles": [{"name": "default", "plugins": []}],
}


def scenario(seed: int):
    """A random pool (1-12 endpoints, random metrics and roles), an index, some history, and one request."""
    rng = random.Random(seed)
    eps = [
        endpoint(i, role=rng.choice(ROLES), waiting=rng.randrange(0, 30), running=rng.randrange(0, 64),
                 kv_usage=rng.random(), num_gpu_blocks=rng.choice([None, 50, 5000]), stale=rng.random() < 0.3,
                 scraped_at=rng.random())
        for i in range(rng.randint(1, 12))
    ]
    index = KVIndex(max_keys=50_000)
    shared = prompt(seed, rng.choice([0, 15, 16, 700, 2000]))
    for e in eps:
        if rng.random() < 0.5:
            store(index, e.id, shared[: rng.randrange(0, len(shared) + 1)])
    ctx = make_ctx(index, seed=seed, clock=lambda: 5.0)
    warm = build_scheduler(parse_config(EVERY_PRODUCER), ctx)
    for i in range(rng.randrange(0, 6)):  # history for the stateful producers
        r = request(f"w{i}", shared + prompt(100 + i, 40), session_id="s")
        res = warm.schedule(r, eps)
        if rng.random() < 0.5:
            warm.on_complete(r, res, RequestOutcome(ok=True))
    req = request("r", shared + prompt(seed + 1000, rng.randrange(0, 100)), session_id="s")
    state = CycleState(req, eps)
    for p in warm.producers:
        p.produce(state)
    return ctx, state, eps


def build(type_: str, ctx):
    info = REGISTRY[type_]
    return info.factory(type_, info.params(), ctx)


def observe(type_: str, seed: int):
    """What the plugin does in one scenario, as plain data (checked for the contract, compared for determinism)."""
    ctx, state, eps = scenario(seed)
    ids = {e.id for e in eps}
    plugin = build(type_, ctx)
    kind = REGISTRY[type_].kind
    if kind == "scorer":
        out = plugin.score(state, eps)
        assert set(out) <= ids, "scorer keys must be a subset of the candidates"
        assert all(0.0 <= s <= 1.0 and not math.isnan(s) for s in out.values()), out
        half = eps[: max(1, len(eps) // 2)]
        assert set(plugin.score(state, half)) <= {e.id for e in half}
        return out
    if kind == "filter":
        out = plugin.filter(state, eps)
        assert [e.id for e in out] == [e.id for e in eps if e in out], "a filter keeps a subset, in order"
        return [e.id for e in out]
    if kind == "picker":
        scored = [(e, random.Random(seed * 31 + i).random()) for i, e in enumerate(eps)]
        picks = [plugin.pick(state, scored).id for _ in range(20)]
        assert set(picks) <= ids
        return picks
    if kind == "producer":
        fresh = CycleState(state.request, eps)
        fresh.token_ids, fresh.block_keys = state.token_ids, state.block_keys
        plugin.produce(fresh)
        for hits in fresh.prefix_hits.values():
            assert set(hits) <= ids
            assert all(0 < n <= len(fresh.block_keys) for n in hits.values())
        return (tuple(fresh.token_ids), tuple(fresh.block_keys), fresh.prefix_hits, fresh.inflight)
    assert kind == "profile-handler"
    assert plugin.validate_profiles(["default"]) is None
    todo = plugin.pick_profiles(state, ["default"], {})
    result = ProfileResult("default", eps[0].id, {}, {eps[0].id: 0.0}, (eps[0].id,))
    decision = plugin.process_results(state, {name: result for name in todo})
    assert decision.target in ids
    assert not plugin.pick_profiles(state, ["default"], {"default": result})
    return (tuple(todo), decision)


@pytest.mark.parametrize("type_", ALL)
@pytest.mark.parametrize("seed", SEEDS)
def test_contract_and_determinism(type_, seed):
    assert observe(type_, seed) == observe(type_, seed)


@pytest.mark.parametrize("type_", ALL)
def test_registration(type_):
    info = REGISTRY[type_]
    assert info.type == type_ and info.doc, "every plugin is documented"
    assert info.params.model_config.get("frozen") and info.params.model_config.get("extra") == "forbid"
    plugin = build(type_, make_ctx())
    assert plugin.type == type_ and plugin.name == type_
    assert plugin.kind == info.kind and isinstance(plugin, KIND_PROTOCOLS[info.kind])
    for dep in getattr(plugin, "requires", ()):
        assert REGISTRY[dep].kind == "producer"


def test_registry_is_one_list_of_unique_types():
    assert len({i.type for i in BUILTINS}) == len(BUILTINS)
    kinds = {i.kind for i in BUILTINS}
    assert kinds == {"producer", "filter", "scorer", "picker", "profile-handler"}
    assert set(BUILTIN_DECIDERS) == {"always", "never", "uncached-tokens", "predicted-ttft"}


def config_using(type_: str) -> dict:
    kind = REGISTRY[type_].kind
    profile = [] if kind in ("producer", "profile-handler") else [{"pluginRef": type_}]
    if kind == "scorer":
        profile[0]["weight"] = 2
    return {"plugins": [{"type": type_}], "schedulingProfiles": [{"name": "default", "plugins": profile}]}


def decisions(type_: str, seed: int) -> list:
    """30 decisions of a scheduler using the plugin, with completions fed back (exercises the lifecycle hooks)."""
    rng = random.Random(seed)
    eps = [endpoint(i, role="both", waiting=rng.randrange(5), kv_usage=rng.random()) for i in range(6)]
    index = KVIndex(max_keys=10_000)
    system = prompt(seed, 256)
    store(index, eps[1].id, system)
    sched = build_scheduler(parse_config(config_using(type_)), make_ctx(index, seed=seed))
    out = []
    for i in range(30):
        r = request(str(i), system + prompt(rng.randrange(4), 64), session_id=str(i % 3))
        res = sched.schedule(r, eps)
        out.append(res)
        if i % 2:
            sched.on_complete(r, res, RequestOutcome(ok=True))
        assert res.target in {e.id for e in eps}
        assert set(res.totals) <= {e.id for e in eps}
    sched.remove_endpoint(eps[1].id)
    return out


@pytest.mark.parametrize("type_", ALL)
def test_scheduler_with_plugin_is_deterministic(type_):
    assert decisions(type_, 3) == decisions(type_, 3)


def test_handler_decision_shape():
    assert HandlerDecision("decode", endpoint(0).id).prefill is None


@pytest.mark.parametrize("name", sorted(BUILTIN_DECIDERS))
@pytest.mark.parametrize("seed", SEEDS)
def test_decider_contract_and_determinism(name, seed):
    """Every P/D decider: documented, frozen Params with defaults, a local precheck or None, a verdict whose numbers
    make sense, the same answer for the same scenario; configurable through ``pd-profile-handler``."""
    cls = BUILTIN_DECIDERS[name]
    assert cls.name == name and (cls.__doc__ or "").strip()
    assert cls.Params.model_config.get("frozen") and cls.Params.model_config.get("extra") == "forbid"

    def run():
        ctx, state, eps = scenario(seed)
        dec = build_decider(name, {}, ctx)
        decode, prefill = eps[0], eps[-1]
        pre = dec.precheck(state, decode)
        assert pre is None or pre.remote is False
        verdict = dec.decide(state, decode, prefill)
        assert 0 <= verdict.uncached_tokens <= state.prompt_tokens and verdict.reason
        return pre, verdict

    assert run() == run()
    cfg = {"plugins": [{"type": "pd-profile-handler", "parameters": {"decider": name}}],
           "schedulingProfiles": [{"name": "decode", "plugins": []}, {"name": "prefill", "plugins": []}]}
    assert parse_config(cfg).plugins[0].parameters["decider"] == name
