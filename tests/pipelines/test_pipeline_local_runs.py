"""The pipelines end to end under kfp.local (SubprocessRunner, this interpreter) on simulated engines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from llmd_kserve.config.loader import parse_config
from llmd_kserve.pipeline_runner import failed_tasks, run_local
from llmd_kserve.steps.local import alive

pytestmark = pytest.mark.slow

SMALL = {"num_groups": 3, "prompts_per_group": 6, "system_prompt_len": 768, "question_len": 32, "output_len": 8}


def test_benchmark_pipeline_on_a_local_stack(tmp_path):
    run = run_local("benchmark_pipeline", {"workload_params": SMALL, "num_requests": 18, "rate": 6.0},
                    tmp_path)
    assert failed_tasks(run, "benchmark_pipeline") == []
    bench = run.tasks["benchmark"]["artifacts"]
    doc = json.loads(Path(bench["results"]["uri"]).read_text())
    assert doc["workload"]["mode"] == "live" and doc["runs"][0]["summary"]["n"] == 18
    assert doc["runs"][0]["summary"]["errors"] == 0
    assert Path(bench["report"]["uri"]).read_text().lstrip().lower().startswith("<!doctype html>")
    m = run.metrics()["benchmark"]
    assert 0 < m["ttft_p50"] <= m["ttft_p90"] < 5.0 and 0 < m["tpot_p50"] < 0.5
    assert m["goodput_rps"] > 0 and 0 < m["cache_hit_rate"] < 1 and m["requests"] == 18 and m["errors"] == 0
    assert "| default · poisson@6/s | 18 |" in Path(run.tasks["report"]["artifacts"]["summary"]["uri"]).read_text()


def test_trace_benchmark_pipeline_imports_a_trace_and_writes_benchmark_reports(tmp_path):
    trace = Path(__file__).resolve().parents[2] / "benchmarks" / "traces" / "mooncake_synthetic_500.jsonl"
    run = run_local("trace_benchmark_pipeline", {"trace_uri": str(trace), "engines": 2,
                                                 "trace_params": {"max_requests": 20, "time_scale": 0.5}}, tmp_path)
    assert failed_tasks(run, "trace_benchmark_pipeline") == []
    doc = json.loads(Path(run.tasks["benchmark"]["artifacts"]["results"]["uri"]).read_text())
    assert doc["workload"]["kind"] == "trace" and doc["workload"]["source"] == trace.name
    assert doc["workload"]["trace_fit"]["clipped"] > 0 and doc["runs"][0]["arrival"] == "trace"
    assert doc["runs"][0]["summary"]["n"] == 20 and doc["runs"][0]["summary"]["errors"] == 0
    (br,) = Path(run.tasks["report"]["artifacts"]["benchmark_reports"]["uri"]).iterdir()
    report = json.loads(br.read_text())
    assert report["version"] == "0.2.1" and report["results"]["request_performance"]["aggregate"]["requests"][
        "total"] == 20


def test_tune_pipeline_searches_confirms_and_exports(tmp_path):
    scenario = {"workload": {"kind": "shared-prefix", **SMALL}, "num_requests": 18, "rate": 6.0, "num_blocks": 256,
                "engines": 2, "min_engines": 1, "max_engines": 2}
    run = run_local("tune_pipeline", {"scenario": scenario, "n_trials": 4, "top_k": 1, "name": "tuned",
                                      "namespace": "ml"}, tmp_path)
    assert failed_tasks(run, "tune_pipeline") == []
    tm = run.metrics()["tune"]
    assert tm["trials"] == 4 and tm["best_value"] > 0 and tm["baseline_value"] > 0
    trials = Path(run.tasks["tune"]["artifacts"]["trials"]["uri"]).read_text().splitlines()
    assert trials[0].startswith("trial,state,") and len(trials) == 5
    conf = run.tasks["confirm"]
    winner = conf["parameters"]["Output"]
    assert winner == "default" or winner.startswith("trial-")
    cm = yaml.safe_load(Path(conf["artifacts"]["configmap"]["uri"]).read_text())
    assert cm["kind"] == "ConfigMap" and cm["metadata"] == cm["metadata"] | {"name": "tuned-router-config",
                                                                            "namespace": "ml"}
    config = yaml.safe_load(Path(conf["artifacts"]["config"]["uri"]).read_text())
    assert yaml.safe_load(cm["data"]["config.yaml"]) == config
    parse_config(config, "winner")  # the router would load it
    runs = json.loads(Path(conf["artifacts"]["runs"]["uri"]).read_text())["runs"]
    assert [r["policy"] for r in runs][-1] == "default" and len(runs) == 2
    assert all(r["summary"]["n"] == 18 and r["summary"]["errors"] == 0 for r in runs)
    cm_metrics = run.metrics()["confirm"]
    assert cm_metrics["winner_value"] >= cm_metrics["default_value"] > 0


def test_failed_benchmark_still_tears_the_local_stack_down(tmp_path):
    state_dir = tmp_path / "state"
    run = run_local("deploy_benchmark_teardown", {"target": "local", "workload": "no-such-workload",
                                                  "state_dir": str(state_dir), "sweep": [2.0]}, tmp_path / "runs")
    failed = failed_tasks(run, "deploy_benchmark_teardown")
    assert "benchmark" in failed and "report" in failed  # benchmark failed, report was skipped
    handle = json.loads(run.tasks["wait-ready"]["parameters"]["handle"])
    assert handle["target"] == "local" and handle["router_url"].startswith("http://127.0.0.1:")
    removed = json.loads(run.tasks["teardown"]["parameters"]["Output"])  # the exit task ran after the failure
    pids = [int(r.split("/")[1]) for r in removed]
    assert pids and sorted(pids) == sorted(handle["pids"])
    assert alive(pids) == []
    assert not Path(handle["state_file"]).exists()


def test_plan_pipeline_plans_and_renders(tmp_path):
    run = run_local("plan_pipeline", {"workload": "shared-prefix", "rate": 20.0, "duration": 4.0, "max_replicas": 4,
                                      "configs": ["default"], "pd_configs": [], "headroom": False,
                                      "namespace": "ml"}, tmp_path)
    assert failed_tasks(run, "plan_pipeline") == []
    arts = run.tasks["plan"]["artifacts"]
    doc = json.loads(Path(arts["plan_json"]["uri"]).read_text())
    m = run.metrics()["plan"]
    assert doc["plan"]["meets"] and m["replicas"] == doc["plan"]["replicas"] and m["attainment"] >= 0.95
    kinds = {yaml.safe_load(p.read_text())["kind"] for p in Path(arts["manifests"]["uri"]).glob("*.yaml")}
    assert {"InferenceService", "ServingRuntime", "ConfigMap", "Kustomization"} <= kinds
