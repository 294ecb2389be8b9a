"""`bench --sim --profile`: the cluster simulator runs the named latency profile's engines."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from llmd_kserve.bench.workloads import ArrivalSpec, SharedPrefixSpec
from llmd_kserve.cluster_sim import run_bench
from llmd_kserve.latency import load_profile

ROOT = Path(__file__).resolve().parents[2]
SPEC = SharedPrefixSpec(num_groups=6, prompts_per_group=1, system_prompt_len=512, question_len=32, output_len=4)


def _ttft_p50(profile: str) -> float:
    runs = run_bench(workload=SPEC, arrivals=[ArrivalSpec(pattern="constant", rate=1.0)], engines=2,
                     config="round-robin", profile=profile)
    return float(runs[0]["summary"]["ttft_p50"])


def test_each_profile_times_the_engines() -> None:
    # cold prompts one second apart: each TTFT is one isolated prefill, as the profile predicts it
    cpu, h100 = load_profile("cpu-tiny-llama"), load_profile("h100-llama8b")
    ratio = _ttft_p50("cpu-tiny-llama") / _ttft_p50("h100-llama8b")
    assert ratio == pytest.approx(cpu.prefill_time(544) / h100.prefill_time(544), rel=0.25)
    assert ratio > 1.5


def test_bench_cli_records_the_profile(tmp_path: Path) -> None:
    out = tmp_path / "b.json"
    subprocess.run([sys.executable, "-m", "llmd_kserve.cli", "bench", "--sim", "--engines", "2", "--num-requests",
                    "4", "--rate", "2", "--profile", "cpu-tiny-llama", "--no-progress", "--json", str(out)],
                   check=True, cwd=ROOT, capture_output=True, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    report = json.loads(out.read_text())
    assert report["workload"]["stack"]["profile"] == "cpu-tiny-llama"
