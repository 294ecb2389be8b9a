"""``llmd-kserve calibrate``: llm-d's peak-prefill recipe recovers a simulated engine's known prefill throughput."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from llmd_kserve.bench.peak_prefill import fit_prefill
from llmd_kserve.cli import main
from llmd_kserve.latency import load_profile


def _calibrate(capsys, *args: str) -> dict:
    assert main(["calibrate", "--warmup", "1", "--measurements", "3", "--no-fit", "--seed", "1", *args]) == 0
    out = capsys.readouterr()
    assert "measure 3: TTFT=" in out.err  # progress on stderr, JSON alone on stdout
    return json.loads(out.out)


def _known(profile: str) -> float:
    """The profile's own answer: one unloaded chunk of max_num_batched_tokens, tokens / seconds."""
    p = load_profile(profile)
    return p.max_num_batched_tokens / p.prefill_time(p.max_num_batched_tokens)


def test_calibrate_sim_recovers_the_builtin_profile(capsys):
    # 4x slower than real time: this busy machine's own HTTP and JSON time shrinks to a small part of each TTFT
    doc = _calibrate(capsys, "--sim", "h100-llama8b", "--sim-time-scale", "4")
    assert doc["chunkSize"] == 8192 and doc["target"] == "sim:h100-llama8b" and len(doc["samplesS"]) == 3
    assert doc["peakPrefillThroughput"] == pytest.approx(_known("h100-llama8b"), rel=0.10)
    assert doc["config"] == {"type": "prefix-cache-affinity-filter",
                             "parameters": {"peakPrefillThroughput": doc["peakPrefillThroughput"]}}
    assert doc["tau"] == int(doc["peakPrefillThroughput"] * 18.0)


def test_calibrate_sim_tracks_a_slower_profile_file(capsys, tmp_path: Path):
    """A profile three times slower per token, with a 2048-token budget: the chunk follows the profile, and the
    measured throughput follows its timing (not a constant of the tool)."""
    slow = load_profile("h100-llama8b").model_dump() | {"name": "slow", "per_token_s": 1.0e-4,
                                                         "max_num_batched_tokens": 2048}
    path = tmp_path / "slow.yaml"
    path.write_text(yaml.safe_dump(slow))
    doc = _calibrate(capsys, "--sim", str(path), "--sim-time-scale", "2")
    assert doc["chunkSize"] == 2048
    assert doc["peakPrefillThroughput"] == pytest.approx(_known(str(path)), rel=0.10)
    assert _known(str(path)) < _known("h100-llama8b") / 2


def test_fit_recovers_a_quadratic_prefill_time():
    def ttft(n: int) -> float:
        return 0.01 + 2e-5 * n + 7e-10 * n * n

    fit = fit_prefill({n: ttft(n) for n in (2048, 4096, 8192)})
    assert fit == pytest.approx({"fixed_s": 0.01, "per_token_s": 2e-5, "attn_s": 7e-10}, rel=1e-6)


def test_calibrate_unreachable_target_is_one_line(capsys):
    assert main(["calibrate", "--target", "http://127.0.0.1:9", "--model", "m", "--warmup", "0"]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress line saying what it measures
    assert error.startswith("llmd-kserve calibrate: error: cannot reach http://127.0.0.1:9/v1/completions")
