"""Skipping the scorers when a profile's filters leave one candidate changes no decision and no plugin state: the
same request sequence through every shipped config, with and without the shortcut, decides the same everywhere."""

from __future__ import annotations

import random

import pytest

from llmd_kserve.config.build import build_scheduler
from llmd_kserve.kvcache.index import KVIndex
from llmd_kserve.scheduling.runner import ProfileRunner
from llmd_kserve.types import RequestOutcome
from tests.scheduling.sched_fixtures import endpoint, make_ctx, prompt, request, store

CONFIGS = ["default", "precise-prefix", "approx-prefix", "load-only", "random", "round-robin", "pd-always",
           "pd-never", "pd-predicted-ttft", "pd-uncached"]
POOLS = {  # (index, role) per endpoint
    "one": [(0, "both")],
    "four": [(0, "both"), (1, "both"), (2, "both"), (3, "both")],
    "pd": [(0, "prefill"), (1, "decode")],
    "pd-wide": [(0, "prefill"), (1, "decode"), (2, "decode")],
}


def _run(config: str, pool: str, lone_scored: bool, monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    monkeypatch.setattr(ProfileRunner, "score_lone_candidate", lone_scored)
    rng = random.Random(7)  # the same requests, loads and completions in both runs
    index = KVIndex(max_keys=100_000)
    clock = [0.0]
    sched = build_scheduler(config, make_ctx(index, seed=1, clock=lambda: clock[0]))
    prefixes = [prompt(s, 200) for s in range(3)]
    inflight, out = [], []
    for i in range(60):
        clock[0] += 0.01
        eps = [endpoint(n, role, waiting=rng.randrange(4), running=rng.randrange(8), kv_usage=rng.random(),
                        scraped_at=clock[0] - rng.random() * 0.05) for n, role in POOLS[pool]]
        tokens = rng.choice(prefixes) + prompt(100 + i, rng.randrange(5, 80))
        req = request(f"r{i}", tokens)
        res = sched.schedule(req, eps)
        out.append((res.target, res.prefill, res.profile, res.prompt_tokens, res.predicted_cached_tokens, res.pd,
                    sorted(res.totals)))
        store(index, res.target, tokens)  # the engine caches what it served (KV events)
        inflight.append((req, res))
        while inflight and rng.random() < 0.5:
            done_req, done_res = inflight.pop(rng.randrange(len(inflight)))
            if done_res.prefill is not None:
                sched.on_prefill_complete(done_req, done_res, RequestOutcome(ok=True, prompt_tokens=len(tokens)))
            sched.on_complete(done_req, done_res, RequestOutcome(ok=True, prompt_tokens=done_res.prompt_tokens))
    return out


@pytest.mark.parametrize("pool", list(POOLS))
@pytest.mark.parametrize("config", CONFIGS)
def test_lone_candidate_shortcut_decides_the_same(config, pool, monkeypatch):
    if pool.startswith("pd") != config.startswith("pd"):
        pytest.skip("P/D configs need prefill and decode endpoints; the others use 'both' endpoints")
    scored = _run(config, pool, True, monkeypatch)
    assert _run(config, pool, False, monkeypatch) == scored
    lone = [len(d[6]) == 1 for d in scored]
    if pool in ("one", "pd"):
        assert all(lone)
    if (config, pool) == ("default", "four"):  # the prefix-affinity filter sometimes leaves the holder alone
        assert any(lone) and not all(lone)


def test_lone_candidate_is_not_scored(monkeypatch):
    sched = build_scheduler("default", make_ctx(KVIndex(max_keys=1000)))
    res = sched.schedule(request("r", prompt(1, 50)), [endpoint(0)])
    assert res.scores == {} and res.totals == {endpoint(0).id: 0.0}
    monkeypatch.setattr(ProfileRunner, "score_lone_candidate", True)
    res = sched.schedule(request("r2", prompt(1, 50)), [endpoint(0)])
    assert "default/queue-scorer" in res.scores
