"""Scheduler configs as the simulator compares them: llm-d's baseline with the simulated engine's calibrated
prefill throughput."""

from __future__ import annotations

from pathlib import Path

from llmd_kserve.config.loader import load_config
from llmd_kserve.config.schema import SchedulerConfig

LLMD_BASELINE = "llm-d-optimized-baseline"
SIM_H100_PEAK_PREFILL = 32787
"""``peakPrefillThroughput`` (tokens/s) of the simulated ``h100-llama8b`` profile, measured with
``llmd-kserve calibrate --sim h100-llama8b --sim-time-scale 4 --warmup 1 --measurements 3 --no-fit`` (llm-d's
recipe: 8,192-token prompts, median time to the first chunk; the profile's own answer is 33,555)."""


def with_peak_prefill(config: SchedulerConfig, tokens_per_s: float) -> SchedulerConfig:
    """``config`` with every ``prefix-cache-affinity-filter``'s ``peakPrefillThroughput`` set to ``tokens_per_s``."""
    plugins = [p.model_copy(update={"parameters": {**(p.parameters or {}), "peakPrefillThroughput": tokens_per_s}})
               if p.type == "prefix-cache-affinity-filter" else p for p in config.plugins]
    return config.model_copy(update={"plugins": plugins})


def sim_config(policy: str | Path) -> str | Path | SchedulerConfig:
    """What the simulator runs for ``policy``: llm-d's baseline calibrated to the simulated H100
    (:data:`SIM_H100_PEAK_PREFILL`), any other name or path unchanged."""
    if str(policy) != LLMD_BASELINE:
        return policy
    return with_peak_prefill(load_config(LLMD_BASELINE), SIM_H100_PEAK_PREFILL)
