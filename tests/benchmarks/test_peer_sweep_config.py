"""benchmarks/peer_sweep.py: the configs the live sweep gives its routers at a time scale (no sweep is run)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import peer_sweep  # noqa: E402

from llmd_kserve.bench.sim_configs import SIM_H100_PEAK_PREFILL  # noqa: E402
from llmd_kserve.config.loader import load_config  # noqa: E402


def _params(path: str, plugin_type: str) -> dict:
    return next(p.parameters or {} for p in load_config(path).plugins if p.type == plugin_type)


def test_llm_d_baseline_gets_the_simulated_h100_throughput_divided_by_the_time_scale(tmp_path):
    for scale in (2.0, 4.0):
        path = peer_sweep.scaled_config("llm-d-optimized-baseline", scale, tmp_path)
        peak = _params(path, "prefix-cache-affinity-filter")["peakPrefillThroughput"]
        assert peak == SIM_H100_PEAK_PREFILL / scale


def test_seconds_parameters_still_scale_and_other_configs_get_no_throughput(tmp_path):
    shipped = _params("default", "decode-budget-filter")["maxStepS"]
    path = peer_sweep.scaled_config("default", 4.0, tmp_path)
    assert _params(path, "decode-budget-filter")["maxStepS"] == shipped * 4.0
    assert not any(p.type == "prefix-cache-affinity-filter" for p in load_config(path).plugins)


def test_the_baseline_is_a_policy_of_the_sweep():
    assert "llm-d-optimized-baseline" in peer_sweep.OURS


GRID = [10.0, 20.0, 30.0, 40.0, 50.0]


def test_first_seed_starts_at_the_grid_bottom_or_at_the_highest_grid_rate_not_above_start():
    assert peer_sweep.first_rate(GRID, None, None) == 10.0
    assert peer_sweep.first_rate(GRID, None, 30.0) == 30.0
    assert peer_sweep.first_rate(GRID, None, 35.0) == 30.0
    assert peer_sweep.first_rate(GRID, None, 5.0) == 10.0


def test_repeats_start_one_step_below_the_first_seeds_max_rate_whatever_start_says():
    assert peer_sweep.first_rate(GRID, 40.0, 10.0) == 30.0
    assert peer_sweep.first_rate(GRID, 10.0, 40.0) == 10.0
    assert peer_sweep.first_rate(GRID, 8.0, 40.0) == 10.0  # a max rate off the grid (the matched rate)


def test_start_per_policy_wins_over_start_per_scenario():
    starts = peer_sweep._kv("zipf=50;zipf/llm-d-optimized-baseline=40", {}, float)
    assert peer_sweep.start_rate(starts, "zipf", "llm-d-optimized-baseline") == 40.0
    assert peer_sweep.start_rate(starts, "zipf", "default") == 50.0
    assert peer_sweep.start_rate(starts, "chat", "default") is None


def test_every_routing_scenario_has_live_defaults():
    from llmd_kserve.bench.scenarios import SCENARIOS
    for name, sc in SCENARIOS.items():
        if sc.roles is None:  # the P/D scenario is judged over the P/D configs, not in this sweep
            for table in (peer_sweep.RATES, peer_sweep.MATCHED, peer_sweep.SCALE, peer_sweep.MIN_REQUESTS):
                assert name in table, (name, table)
