"""LatencyProfile: the built-in profile, the file format, the model's shape."""

from __future__ import annotations

import json

import pytest
import yaml

from llmd_kserve.errors import ConfigError
from llmd_kserve.latency import DEFAULT_PROFILE, LatencyProfile, builtin_profiles, load_profile


def test_builtin_profile_geometry(profile):
    assert DEFAULT_PROFILE in builtin_profiles()
    assert profile.name == "h100-llama8b"
    assert profile.num_gpu_blocks == 26962 and profile.block_size == 16
    assert profile.kv_bytes_per_token == 2 * 32 * 8 * 128 * 2
    assert profile.max_num_batched_tokens == 8192


def test_step_time_shape(profile):
    # more work never takes less time; an empty step takes none
    assert profile.step_time(0, 0, 0, 0) == 0.0
    assert profile.step_time(0, 0, 64, 64 * 512) > profile.step_time(0, 0, 1, 512)
    assert profile.step_time(4096, 4096, 0, 0) > profile.step_time(1024, 1024, 0, 0)
    # attention: the same chunk over a longer cached context costs more
    assert profile.step_time(1024, 8192, 0, 0) > profile.step_time(1024, 1024, 0, 0)
    # an explicit attention sum for several chunks in one step replaces the single-chunk product
    one = profile.step_time(8192, 8192, 0, 0)
    two = profile.step_time(8192, 8192, 0, 0, prefill_attn=2 * 4096 * 4096)
    assert two < one


def test_prefill_time_chunks_by_budget(profile):
    # 16000 tokens take two chunks; a cached prompt only recomputes a little
    assert profile.prefill_time(16000) > 2 * profile.prefill_time(8000) * 0.9
    assert profile.prefill_time(16, cached_tokens=8176) < profile.prefill_time(8192) / 5


def test_kv_transfer_time(profile):
    assert profile.kv_transfer_time(1000) == pytest.approx(1000 * 131072 / 25e9)
    assert profile.kv_transfer_time(1000, gbps=50) == pytest.approx(profile.kv_transfer_time(1000) / 2)


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_profile_file_roundtrip(tmp_path, profile, suffix):
    data = profile.model_dump() | {"name": "mine", "per_token_s": 1e-5}
    path = tmp_path / f"p{suffix}"
    path.write_text(json.dumps(data) if suffix == ".json" else yaml.safe_dump(data))
    p = load_profile(str(path))
    assert isinstance(p, LatencyProfile) and p.name == "mine" and p.per_token_s == 1e-5


def test_profile_errors_name_the_field(tmp_path, profile):
    with pytest.raises(ConfigError, match="no such latency profile"):
        load_profile("no-such-gpu")
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(profile.model_dump() | {"num_gpu_blocks": -1}))
    with pytest.raises(ConfigError, match="num_gpu_blocks"):
        load_profile(str(path))
    path.write_text(yaml.safe_dump(profile.model_dump() | {"typo_field": 1}))
    with pytest.raises(ConfigError, match="typo_field"):
        load_profile(str(path))
