"""`llmd-kserve pipeline …`: list, compile, parameter validation before anything runs, unreachable hosts."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from llmd_kserve.cli import main
from llmd_kserve.pipeline_runner import parse_params
from llmd_kserve.stack import free_port

pytestmark = pytest.mark.slow  # real processes and sockets: the full suite runs them, the fast loop does not


def test_list_shows_every_pipeline_with_defaults(capsys):
    assert main(["pipeline", "list"]) == 0
    out = capsys.readouterr().out
    assert "benchmark_pipeline(target: String = \"local\"" in out
    assert "tune_pipeline(" in out and "deploy_benchmark_teardown(" in out and "n_trials: Integer = 30" in out
    assert "plan_pipeline(workload: String = \"shared-prefix\"" in out


def test_compile_writes_ir_for_one_or_all(tmp_path, capsys):
    assert main(["pipeline", "compile", "tune_pipeline", "--out", str(tmp_path / "one")]) == 0
    assert [p.name for p in (tmp_path / "one").iterdir()] == ["tune_pipeline.yaml"]
    assert main(["pipeline", "compile", "--out", str(tmp_path / "all")]) == 0
    names = sorted(p.name for p in (tmp_path / "all").iterdir())
    assert names == ["benchmark_pipeline.yaml", "deploy_benchmark_teardown.yaml", "plan_pipeline.yaml",
                     "trace_benchmark_pipeline.yaml", "tune_pipeline.yaml"]
    assert yaml.safe_load((tmp_path / "all" / "benchmark_pipeline.yaml").read_text())["pipelineInfo"]["name"] == \
        "llmd-benchmark"


def test_params_are_typed():
    got = parse_params("benchmark_pipeline", ["rate=8", "sweep=[2, 4]", "num_requests=12", "target=sim",
                                              'workload_params={"num_groups": 2}'])
    assert got == {"rate": 8.0, "sweep": [2, 4], "num_requests": 12, "target": "sim",
                   "workload_params": {"num_groups": 2}}
    assert parse_params("tune_pipeline", ["include_default=false"]) == {"include_default": False}


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "llmd_kserve.cli", *args], capture_output=True, text=True,
                          timeout=120)


def test_bad_params_fail_before_anything_runs(tmp_path):
    for param, needle in (("ratez=1", "unknown parameter 'ratez'"), ("rate=fast", "not a valid Float"),
                          ("sweep={}", "expected a JSON array"), ("include_default=maybe", None),
                          ("nokey", "expected KEY=VALUE")):
        name = "tune_pipeline" if param.startswith("include") else "benchmark_pipeline"
        r = _cli("pipeline", "run", name, "--local", "--param", param, "--pipeline-root", str(tmp_path))
        assert r.returncode == 2, (param, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("llmd-kserve pipeline: error:"), r.stderr
        if needle:
            assert needle in lines[0]
    assert list(tmp_path.iterdir()) == []  # nothing ran


def test_unknown_pipeline_is_one_line():
    r = _cli("pipeline", "run", "nope", "--local")
    assert r.returncode == 2 and "unknown pipeline 'nope'" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_unreachable_host_is_one_line():
    url = f"http://127.0.0.1:{free_port()}"
    r = _cli("pipeline", "run", "benchmark_pipeline", "--host", url, "--param", "rate=2")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and f"cannot submit to Kubeflow Pipelines at {url}" in lines[0], r.stderr
