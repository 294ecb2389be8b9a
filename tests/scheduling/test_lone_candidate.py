"""Skipping the scorers when a profile's filters leave one candidate changes no decision and no plugin state: the
same request sequence through every shipped config, with and without the shortcut, decides the same everywhere."""

from __future__ import annotations

import pytest

from llmd_kserve.config.build import build_scheduler
from llmd_kserve.kvcache.index import KVIndex
from llmd_kserve.scheduling.runner import ProfileRunner
from tests.scheduling.sched_fixtures import endpoint, make_ctx, prompt, replay_decisions, request

CONFIGS = ["default", "precise-prefix", "approx-prefix", "load-only", "random", "round-robin", "pd-always",
           "pd-never", "pd-predicted-ttft", "pd-uncached"]
POOLS = {  # the endpoints' roles
    "one": ["both"],
    "four": ["both"] * 4,
    "pd": ["prefill", "decode"],
    "pd-wide": ["prefill", "decode", "decode"],
}


def _run(config: str, pool: str, lone_scored: bool, monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    monkeypatch.setattr(ProfileRunner, "score_lone_candidate", lone_scored)
    roles = POOLS[pool]
    decisions = replay_decisions(config, roles, requests=60, prefixes=3, prefix_len=200,
                                 stale_s=[0.05] * len(roles), complete_p=0.5, seed=7)
    return [(r.target, r.prefill, r.profile, r.prompt_tokens, r.predicted_cached_tokens, r.pd, sorted(r.totals))
            for r in decisions]


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
