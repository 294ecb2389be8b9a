"""The demo's rate sweep: max rate within the SLO from attainment per rate, and a small simulated sweep."""

from __future__ import annotations

import pytest

from llmd_kserve.bench.stats import SLO
from llmd_kserve.bench.workloads import SharedPrefixSpec
from llmd_kserve.demo_sweep import matched_load, matched_rate, max_rate_within_slo, sweep


def test_max_rate_is_the_last_rate_of_the_attaining_run_from_the_bottom() -> None:
    assert max_rate_within_slo({10: 1.0, 20: 0.95, 30: 0.5, 40: 0.95}) == 20  # a lucky point past a miss is ignored
    assert max_rate_within_slo({10: 0.5, 20: 1.0}) == 0.0
    assert max_rate_within_slo({10: 0.9}) == 10


def test_small_sweep_prefix_aware_sustains_more_than_round_robin() -> None:
    spec = SharedPrefixSpec(num_groups=24, prompts_per_group=20, system_prompt_len=3000, question_len=100,
                            output_len=32)
    rows = sweep(spec, 2, 2000, 20.0, ("round-robin", "default"), num_requests=240, slo=SLO(0.5, 0.05),
                 factors=(0.5, 1.0, 2.0))
    by = {r["policy"]: r for r in rows}
    assert [p["rate"] for p in by["default"]["points"]] == [10.0, 20.0, 40.0]
    assert by["default"]["max_rate_in_slo"] > by["round-robin"]["max_rate_in_slo"]


def test_matched_rate_is_a_fixed_fraction_of_the_baselines_saturation() -> None:
    assert matched_rate([60.0, 80.0]) == 48.0  # 0.8 x the lower of the repeats
    assert matched_rate([0.0], floor=10.0) == 8.0  # the baseline met the SLO nowhere: below the lowest rate
    with pytest.raises(ValueError, match="fraction"):
        matched_rate([60.0], fraction=1.5)


def test_matched_load_runs_every_policy_at_the_rule_s_rate() -> None:
    spec = SharedPrefixSpec(num_groups=24, prompts_per_group=20, system_prompt_len=3000, question_len=100,
                            output_len=32)
    rows = [{"policy": "round-robin", "points": [{"rate": 10.0}, {"rate": 20.0}], "max_rate_in_slo": 20.0}]
    m = matched_load(spec, 2, 2000, rows, ("round-robin", "default"), num_requests=200, slo=SLO(0.5, 0.05))
    assert m is not None and m["rate"] == 16.0 and m["requests"] == 200
    assert m["points"]["default"]["hit"] > m["points"]["round-robin"]["hit"]
    assert matched_load(spec, 2, 2000, rows[:0], ("default",), num_requests=10, slo=SLO()) is None
