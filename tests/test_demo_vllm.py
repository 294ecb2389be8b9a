"""`llmd-kserve demo --engine vllm`: the flag reaches the plan and the live stack, the vLLM scale puts the tiny
model's KV cache under pressure, and a missing vLLM environment is one line naming the install command."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest

from llmd_kserve.bench.workloads import ArrivalSpec, make_workload
from llmd_kserve.cli import build_parser
from llmd_kserve.demo_live import stack_options
from llmd_kserve.demo_plan import VLLM_KV_CACHE_TOKENS, VLLM_POLICIES, plan
from llmd_kserve.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_cli_wires_the_engine_flag() -> None:
    a = build_parser().parse_args(["demo", "--engine", "vllm", "--vllm-python", "/x/python", "--no-sim"])
    assert a.engine == "vllm" and a.vllm_python == "/x/python" and a.policies is None and not a.sim
    assert build_parser().parse_args(["demo"]).engine == "sim"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["demo", "--engine", "gpu"])


def test_the_vllm_plan_keeps_the_sim_phase_and_scales_the_live_one_down() -> None:
    for quick in (False, True):
        sim_s, live_s = plan(quick)
        sim_v, live_v = plan(quick, "vllm")
        assert sim_v == sim_s  # the simulated phase stays as it is
        assert (live_s.engine, live_v.engine) == ("sim", "vllm")
        assert live_v.engines == 2 and live_v.kv_cache_tokens == VLLM_KV_CACHE_TOKENS and live_v.num_blocks is None
        assert live_v.num_requests < live_s.num_requests and live_v.rate < live_s.rate
        assert live_v.info()["engine"] == "vllm" and "kv_cache_tokens" in live_v.info()
    assert VLLM_POLICIES[0] == "round-robin" and {"approx-prefix", "default"} <= set(VLLM_POLICIES)
    with pytest.raises(ConfigError, match="engine"):
        plan(engine="gpu")


def test_the_vllm_stack_runs_the_tiny_model_and_the_router_keys_with_its_tokenizer(tmp_path, monkeypatch) -> None:
    pytest.importorskip("tokenizers", reason="the tiny model needs the 'hf' extra")
    monkeypatch.setenv("HOME", str(tmp_path))  # the tiny model is written under ~/.cache
    live = plan(True, "vllm")[1]
    options = stack_options(live, "approx-prefix", 3, "/venv/bin/python")
    model = options["model"]
    assert options["engine"] == "vllm" and options["engines"] == 2 and options["config"] == "approx-prefix"
    assert options["kv_cache_tokens"] == VLLM_KV_CACHE_TOKENS and options["vllm_python"] == "/venv/bin/python"
    assert options["router_args"] == ("--tokenizer", model) and (Path(model) / "tokenizer.json").is_file()
    assert stack_options(plan(True)[1], "default", 0, None)["engine_args"] == ("--num-blocks", "4096")


def test_the_prefixes_overflow_one_replica_and_fit_in_two(tmp_path, monkeypatch) -> None:
    """Measured in the tiny model's own tokens: more than one replica's KV cache, less than both together."""
    tokenizers = pytest.importorskip("tokenizers", reason="the tiny model needs the 'hf' extra")
    monkeypatch.setenv("HOME", str(tmp_path))
    from llmd_kserve.tiny_model import ensure_tiny_model

    tok = tokenizers.Tokenizer.from_file(str(ensure_tiny_model() / "tokenizer.json"))
    for quick in (False, True):
        live = plan(quick, "vllm")[1]
        reqs = make_workload(live.workload, ArrivalSpec(pattern="poisson", rate=live.rate), random.Random(0),
                             live.num_requests)
        prefix = {r.group: " ".join(r.prompt.split()[:live.workload.system_prompt_len]) for r in reqs}
        tokens = sum(len(tok.encode(p).ids) for p in prefix.values())
        assert len(prefix) == live.workload.num_groups
        assert VLLM_KV_CACHE_TOKENS < tokens < live.engines * VLLM_KV_CACHE_TOKENS, tokens


def test_without_a_vllm_env_the_demo_stops_at_once_naming_the_install_command(tmp_path) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, "-m", "llmd_kserve.cli", "demo", "--engine", "vllm", "--html", ""],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode != 0 and run.stdout == ""
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "llmd-kserve vllm install" in lines[0], run.stderr
