"""The decision's fast paths compute what the straightforward code computes: the unscraped load without walking the
charges (candidates scraped before the oldest charge), the lazy mapping's ``get``; checked against reference
implementations on random request sequences, and whole decisions compared with the fast path switched off."""

from __future__ import annotations

import random

import pytest

from llmd_kserve.config.build import build_scheduler
from llmd_kserve.kvcache.index import KVIndex
from llmd_kserve.plugins.base import CycleState
from llmd_kserve.scheduling.inflight_load import InflightLoadProducer, _Lazy
from llmd_kserve.types import NO_LOAD, EndpointId, Load, RequestOutcome
from tests.scheduling.sched_fixtures import endpoint, make_ctx, prompt, replay_decisions, request, store


def reference_unscraped(producer: InflightLoadProducer, state: CycleState) -> dict[EndpointId, Load]:
    """The walk over every charge newer than the oldest candidate's scrape (the code before the fast path)."""
    scraped = {e.endpoint.id: e.metrics.scraped_at - producer._lag for e in state.candidates}
    if not scraped:
        return {}
    oldest = min(scraped.values())
    out: dict[EndpointId, Load] = {}
    for (_, ep), (tokens, at) in reversed(producer._charges.items()):
        if at <= oldest:
            break
        since = scraped.get(ep)
        if since is not None and at > since:
            reqs, toks = out.get(ep, NO_LOAD)
            out[ep] = Load(reqs + 1, toks + tokens)
    return out


def _walk_always(producer: InflightLoadProducer, state: CycleState) -> dict[EndpointId, Load]:
    return reference_unscraped(producer, state)


@pytest.mark.parametrize("lag", [0.0, 0.03])
@pytest.mark.parametrize("seed", range(4))
def test_unscraped_equals_the_full_walk(seed, lag):
    rng = random.Random(seed)
    clock = [0.0]
    producer = InflightLoadProducer("l", InflightLoadProducer.Params(scrape_lag_s=lag, request_timeout_s=0.5),
                                    make_ctx(clock=lambda: clock[0]))
    sched = build_scheduler("default", make_ctx(KVIndex(max_keys=10_000), clock=lambda: clock[0]))
    inflight = []
    checked = {"fast": 0, "walk": 0, "mixed": 0}
    for i in range(300):
        clock[0] += rng.choice([0.0, 0.001, 0.01, 0.05])
        # scrapes anywhere from long before the oldest charge to after the newest (and some exactly at a charge)
        times = [at for _, at in producer._charges.values()]
        eps = []
        stale = rng.random() < 0.3  # every candidate scraped before the oldest charge (the benchmark's case)
        for n in range(6):
            r = 0.5 if stale else rng.random()
            at = (rng.choice(times) if times and r < 0.2 else -1.0 if stale
                  else clock[0] - rng.random() * (2.0 if r < 0.6 else 0.05))
            eps.append(endpoint(n, waiting=rng.randrange(3), running=rng.randrange(5), scraped_at=at))
        state = CycleState(request(f"r{i}", prompt(i, rng.randrange(1, 60))), eps)
        producer.produce(state)
        want = reference_unscraped(producer, state)
        assert dict(state.unscraped) == want
        for e in eps:
            assert state.unscraped.get(e.endpoint.id) == want.get(e.endpoint.id)
            assert state.unscraped.get(e.endpoint.id, NO_LOAD) == want.get(e.endpoint.id, NO_LOAD)
        if producer._charges:
            first = next(iter(producer._charges.values()))[1]
            early = [e.metrics.scraped_at - lag < first for e in eps]
            checked["fast" if all(early) else "walk" if not any(early) else "mixed"] += 1
        res = sched.schedule(state.request, eps)
        producer.on_scheduled(state, type("D", (), {"target": res.target, "prefill": None})())
        inflight.append((state.request, res))
        while inflight and rng.random() < 0.45:
            req, done = inflight.pop(rng.randrange(len(inflight)))
            producer.on_complete(req, type("D", (), {"target": done.target, "prefill": None})(),
                                 RequestOutcome(ok=True))
    assert all(checked.values()), checked  # every branch was exercised


def test_lazy_get_is_the_mapping_get():
    calls = []
    lazy = _Lazy(lambda: calls.append(1) or {EndpointId("a"): Load(1, 2)})
    assert lazy.get(EndpointId("a")) == Load(1, 2) and lazy.get(EndpointId("b")) is None
    assert lazy.get(EndpointId("b"), NO_LOAD) is NO_LOAD and dict(lazy) == {"a": Load(1, 2)} and calls == [1]


@pytest.mark.parametrize("config", ["default", "load-only", "precise-prefix"])
def test_decisions_are_the_same_without_the_fast_path(config, monkeypatch):
    def run() -> list[tuple]:
        decisions = replay_decisions(config, ["both"] * 5, requests=120, prefixes=4, prefix_len=300,
                                     stale_s=[3.0, 0.05, 3.0, 0.05, 3.0], complete_p=0.4, seed=11)
        return [(r.target, r.prompt_tokens, r.predicted_cached_tokens, r.totals) for r in decisions]

    fast = run()
    monkeypatch.setattr(InflightLoadProducer, "_unscraped", _walk_always)
    assert run() == fast


def test_decode_budget_filter_keeps_what_its_step_says(monkeypatch):
    """The filter's hoisted, memoised loop keeps exactly the endpoints whose ``step`` is within the budget (or, with
    ``margin``, within the margin of the lightest)."""
    from llmd_kserve.scheduling.decode_budget_filter import DecodeBudgetFilter

    rng = random.Random(5)
    clock = [0.0]
    ctx = make_ctx(clock=lambda: clock[0])
    producer = InflightLoadProducer("l", InflightLoadProducer.Params(), ctx)
    checked = 0
    for budget, margin in [(b, m) for b in (0.005, 0.0065, 0.01, 0.02, 0.04) for m in (None, 0.1)]:
        filt = DecodeBudgetFilter("d", DecodeBudgetFilter.Params(max_step_s=budget, margin=margin), ctx)
        for i in range(40):
            clock[0] += 0.01
            eps = [endpoint(n, waiting=rng.randrange(3), running=rng.choice([0, 1, 8, 30, 60, 200, 400]),
                            scraped_at=clock[0] - rng.random()) for n in range(8)]
            state = CycleState(request(f"r{budget}-{i}", prompt(i, rng.choice([10, 500, 3000]))), eps)
            producer.produce(state)
            steps = [filt.step(state, e) for e in eps]
            if margin is None:
                want = [e for e, s in zip(eps, steps, strict=True) if s <= budget] or eps
            else:
                want = [e for e, s in zip(eps, steps, strict=True) if s <= max(budget, min(steps) * (1 + margin))]
            got = filt.filter(state, eps)
            assert list(got) == want
            checked += 0 < len(want) < len(eps)
            producer.on_scheduled(state, type("D", (), {"target": rng.choice(eps).id, "prefill": None})())
    assert checked  # some decisions kept a strict subset


def test_prefill_time_shared_across_endpoints_equals_per_endpoint():
    """``estimate_ttft`` computes a prefill time once per (profile, uncached, cached) per decision: the same
    numbers as computing it for every endpoint."""
    from llmd_kserve.latency import load_profile
    from llmd_kserve.scheduling.ttft import estimate_ttft

    index = KVIndex(max_keys=10_000)
    base = prompt(1, 320)
    store(index, str(endpoint(0).id), base)
    ctx = make_ctx(index)
    sched = build_scheduler("default", ctx)
    eps = [endpoint(n, waiting=n % 3, running=n) for n in range(6)]
    state = CycleState(request("r", base + prompt(2, 100)), eps)
    for producer in sched.producers:
        producer.produce(state)
    profile = load_profile()
    for mode in ("precise", "approx"):
        for backlog in ("queue", "inflight"):
            for tpw in (0, 512):
                memoised = [estimate_ttft(state, e, profile, 16, mode, tpw, backlog) for e in eps]
                state.data.clear()
                fresh = []
                for e in eps:
                    fresh.append(estimate_ttft(state, e, profile, 16, mode, tpw, backlog))
                    state.data.clear()
                assert memoised == fresh
