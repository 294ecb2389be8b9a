"""Routing scenarios (issue 15): deterministic requests with arrivals, the shapes they claim."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from llmd_kserve.bench.scenarios import SCENARIOS
from llmd_kserve.bench.workloads import SharedPrefixSpec, build_requests
from llmd_kserve.latency import load_profile
from llmd_kserve.tokenizer import SimTokenizer


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_every_scenario_builds_timed_requests(name: str) -> None:
    sc = SCENARIOS[name]
    reqs = sc.build(sc.matched_rate, random.Random(0), 40)
    assert len(reqs) == 40
    times = [r.arrival_s for r in reqs]
    assert all(t is not None for t in times) and times == sorted(times)
    assert sc.matched_rate in sc.rates or sc.matched_rate < max(sc.rates)
    again = sc.build(sc.matched_rate, random.Random(0), 40)
    assert [r.prompt for r in again] == [r.prompt for r in reqs]  # deterministic per seed
    for p in sc.engine_profiles or ():
        load_profile(p)


def test_zipf_popularity_is_skewed_and_zero_keeps_equal_groups() -> None:
    skewed = build_requests(SharedPrefixSpec(num_groups=20, prompts_per_group=50, system_prompt_len=8,
                                             question_len=4, zipf_s=1.1), random.Random(1))
    counts = Counter(r.group for r in skewed)
    assert len(skewed) == 1000
    assert counts["g0"] > 150 and counts["g0"] > 5 * counts.get("g19", 0)  # 1/H(20,1.1) ~ 0.28 of the traffic
    equal = build_requests(SharedPrefixSpec(num_groups=20, prompts_per_group=5, system_prompt_len=8,
                                            question_len=4), random.Random(1))
    assert set(Counter(r.group for r in equal).values()) == {5}


def test_zipf_requests_share_their_groups_prefix_tokens() -> None:
    reqs = build_requests(SharedPrefixSpec(num_groups=4, prompts_per_group=10, system_prompt_len=32, question_len=8,
                                           zipf_s=1.0), random.Random(2))
    tok = SimTokenizer()
    by_group: dict[str, list[list[int]]] = {}
    for r in reqs:
        ids = tok.encode(r.prompt)
        assert len(ids) == r.prompt_tokens == 40
        by_group.setdefault(r.group or "", []).append(ids[:32])
    for prefixes in by_group.values():
        assert all(p == prefixes[0] for p in prefixes)


def test_burst_scenario_brings_a_new_prefix_per_burst_within_its_window() -> None:
    sc = SCENARIOS["burst"]
    reqs = sc.build(40.0, random.Random(3), 64)
    groups: dict[str, list[float]] = {}
    for r in reqs:
        groups.setdefault(r.group or "", []).append(r.arrival_s or 0.0)
    assert len(groups) == 8 and all(len(ts) == 8 for ts in groups.values())
    assert all(max(ts) - min(ts) <= 0.02 for ts in groups.values())


def test_llmd_shared_prefix_has_llmds_token_shape() -> None:
    sc = SCENARIOS["llmd-shared-prefix"]
    reqs = sc.build(sc.matched_rate, random.Random(4), 64)
    assert {(r.prompt_tokens, r.max_tokens) for r in reqs} == {(6000 + 1200, 1000)}
    assert len({r.group for r in reqs}) > 16
