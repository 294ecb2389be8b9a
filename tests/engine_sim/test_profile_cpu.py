"""The cpu-tiny-llama profile: the geometry of the vLLM CPU replicas it was fitted to, and the fit itself."""

from __future__ import annotations

import statistics
from pathlib import Path

from llmd_kserve.engine_sim.calibrate import DATA_DIR, replay
from llmd_kserve.latency import builtin_profiles, load_profile
from llmd_kserve.stack.vllm import CPU_BLOCK_SIZE, DEFAULT_KV_CACHE_TOKENS

CPU_DATA = Path(DATA_DIR) / "cpu-tiny-llama"


def test_geometry_matches_the_cpu_replicas_up_starts() -> None:
    prof = load_profile("cpu-tiny-llama")
    assert "cpu-tiny-llama" in builtin_profiles()
    assert prof.block_size == CPU_BLOCK_SIZE == 32
    assert prof.num_gpu_blocks * prof.block_size == DEFAULT_KV_CACHE_TOKENS
    assert prof.kv_bytes_per_token == 2 * 4 * 2 * 64 * 2  # K and V, 4 layers, 2 KV heads, head_dim 64, bf16
    assert (prof.max_num_batched_tokens, prof.max_num_seqs) == (2048, 128)  # vLLM's CPU defaults


def test_fit_reproduces_the_measured_calibration_set() -> None:
    points = replay(load_profile("cpu-tiny-llama"), CPU_DATA)
    errors = [abs(p.error) for p in points if p.checked]
    assert len(errors) >= 20
    assert statistics.mean(errors) < 0.15 and max(errors) < 0.30
    # the H100 profile is not a stand-in: on this data it is off by an order of magnitude
    h100 = [abs(p.error) for p in replay(load_profile("h100-llama8b"), CPU_DATA) if p.checked]
    assert statistics.mean(h100) > 0.5
