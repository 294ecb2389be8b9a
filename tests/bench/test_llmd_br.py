"""Benchmark Report v0.2.1 out of a bench run: llm-d's own validator (``llmd-benchmark-report``) and its JSON Schema
accept what ``bench --report-format llmd-br`` writes, and the numbers are the run's."""

from __future__ import annotations

import importlib.resources
import json
from pathlib import Path

import pytest
import yaml

from llmd_kserve.bench.llmd_br import benchmark_reports, write_benchmark_reports
from llmd_kserve.bench.runner import BenchOptions, bench_command
from llmd_kserve.errors import ConfigError

br = pytest.importorskip("llmd_benchmark_report", reason="llmd-benchmark-report not installed (dev extra)")
jsonschema = pytest.importorskip("jsonschema")
ROOT = Path(__file__).resolve().parents[2]
TRACE = ROOT / "benchmarks" / "traces" / "mooncake_conversation_500.jsonl"


def _schema() -> dict:
    return json.loads((importlib.resources.files("llmd_benchmark_report") / "br_v0_2_json_schema.json").read_text())


def _valid(doc: dict) -> None:
    assert type(br.load_benchmark_report(doc)).__name__ == "BenchmarkReportV02"  # pydantic models, unit checks
    jsonschema.validate(doc, _schema())


def test_a_bench_sweep_writes_one_valid_report_per_run(tmp_path):
    from llmd_kserve.cluster_sim import run_bench as simulator

    out = tmp_path / "br.json"
    code = bench_command(BenchOptions(sim=True, engines=2, sweep=(4.0, 8.0), num_requests=12, seed=1,
                                  overrides=("num_groups=2", "prompts_per_group=6", "system_prompt_len=512",
                                             "question_len=32", "output_len=8"),
                                  json_path=str(out), report_format="llmd-br", progress=False), simulator)
    assert code == 0 and not out.exists()
    docs = [json.loads((tmp_path / f"br_{i}.json").read_text()) for i in (0, 1)]
    for doc, rate in zip(docs, (4.0, 8.0), strict=True):
        _valid(doc)
        assert doc["version"] == "0.2.1"
        load = doc["scenario"]["load"]["standardized"]
        assert load["rate_qps"] == rate and load["tool"] == "llmd-kserve"
        assert load["prefix"]["num_groups"] == 2 and load["prefix"]["prefix_len"]["value"] == 512
        stack = {c["metadata"]["label"]: c for c in doc["scenario"]["stack"]}
        assert stack["router"]["standardized"]["config"] == "default"
        assert stack["router"]["native"]["config"]["kind"] == "EndpointPickerConfig"  # the router's config itself
        engines = stack["engines-replica"]["standardized"]
        assert engines["kind"] == "inference_engine" and engines["replicas"] == 2
        agg = doc["results"]["request_performance"]["aggregate"]
        assert agg["requests"]["total"] == 12 and agg["requests"]["failures"] == 0
        ttft = agg["latency"]["time_to_first_token"]
        assert ttft["units"] == "s" and 0 < ttft["p50"] <= ttft["p90"] <= ttft["p95"] <= ttft["p99"]
        (engines_obs,) = doc["results"]["observability"]["components"]
        assert engines_obs["component_label"] == "engines-replica"
        assert 0 < engines_obs["aggregate"]["cache_hit_rate"]["mean"] <= 1  # 10 of 12 reuse a 512-token prefix
    assert docs[0]["run"]["eid"] == docs[1]["run"]["eid"] and docs[0]["run"]["uid"] != docs[1]["run"]["uid"]


def test_a_trace_replay_report_is_valid_yaml_with_the_trace_rate(tmp_path):
    from llmd_kserve.cluster_sim import run_bench as simulator

    out = tmp_path / "trace.yaml"
    assert bench_command(BenchOptions(trace=str(TRACE), sim=True, engines=4, max_requests=30, json_path=str(out),
                                  report_format="llmd-br", progress=False), simulator) == 0
    doc = yaml.safe_load(out.read_text())
    _valid(doc)
    load = doc["scenario"]["load"]
    assert load["native"]["config"]["trace_fit"]["clipped"] > 0 and load["native"]["config"]["source"] == TRACE.name
    assert 1 < load["standardized"]["rate_qps"] < 10  # 30 requests over the excerpt's first seconds
    assert load["standardized"]["input_seq_len"]["max"] <= 16384


def test_a_live_report_without_stack_details_is_still_valid():
    report = {"workload": {"kind": "reasoning", "mode": "live", "arrivals": [{"pattern": "concurrency",
                                                                            "concurrency": 2}]},
              "runs": [{"policy": "live", "arrival": "concurrency=2",
                        "summary": {"n": 2, "errors": 2, "wall_s": 1.0, "shed_rate": 0.0},
                        "requests": [{"ok": False, "prompt_tokens": 10}, {"ok": False, "prompt_tokens": 12}]}]}
    (doc,) = benchmark_reports(report)
    _valid(doc)
    assert doc["scenario"]["load"]["standardized"]["concurrency"] == 2
    assert not doc["results"]["request_performance"]["aggregate"].get("latency")  # no request succeeded


def test_llmd_br_needs_a_path(tmp_path):
    with pytest.raises(ConfigError, match="--json"):
        bench_command(BenchOptions(sim=True, report_format="llmd-br"))
    assert write_benchmark_reports({"workload": {}, "runs": []}, tmp_path / "none.json") == []
