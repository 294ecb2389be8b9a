"""The simulator's configs: llm-d's baseline carries the simulated H100's calibrated prefill throughput."""

from __future__ import annotations

from llmd_kserve.bench.sim_configs import LLMD_BASELINE, SIM_H100_PEAK_PREFILL, sim_config, with_peak_prefill
from llmd_kserve.cluster_sim.sim import ClusterSim
from llmd_kserve.config.loader import load_config
from llmd_kserve.scheduling.cache_affinity_filter import DEFAULT_PEAK_PREFILL_THROUGHPUT


def _peak(config: object) -> float:
    sched = ClusterSim(config).scheduler  # type: ignore[arg-type]
    (params,) = [p for (t, _), (p, _) in sched.built.items() if t == "prefix-cache-affinity-filter"]
    return float(params.peak_prefill_throughput)


def test_the_llmd_baseline_runs_with_the_simulated_h100s_throughput_and_the_shipped_one_keeps_llmds() -> None:
    assert _peak(sim_config(LLMD_BASELINE)) == SIM_H100_PEAK_PREFILL != DEFAULT_PEAK_PREFILL_THROUGHPUT
    assert _peak(LLMD_BASELINE) == DEFAULT_PEAK_PREFILL_THROUGHPUT


def test_other_policies_pass_through_and_only_the_filter_changes() -> None:
    assert sim_config("default") == "default"
    shipped = load_config(LLMD_BASELINE)
    tuned = with_peak_prefill(shipped, 1000)
    assert [p.type for p in tuned.plugins] == [p.type for p in shipped.plugins]
    changed = [p for p, q in zip(tuned.plugins, shipped.plugins, strict=True) if p != q]
    assert [(p.type, p.parameters) for p in changed] == [("prefix-cache-affinity-filter",
                                                          {"peakPrefillThroughput": 1000})]
