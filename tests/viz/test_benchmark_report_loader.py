"""Benchmark Reports (ours, inference-perf's, llm-d-benchmark's; v0.2.x and v0.1) load as RunPoints beside bench
JSON runs, and the side-by-side figure draws them."""

from __future__ import annotations

import importlib.resources
import json
from pathlib import Path

import pytest
import yaml

from llmd_kserve.viz.compare import side_by_side
from llmd_kserve.viz.sources.benchmark_report import load_benchmark_reports, report_point

REPORTS = Path(__file__).resolve().parents[2] / "benchmarks" / "reports"
OURS = REPORTS / "mooncake_conversation_500_sim_default.br.json"
INFERENCE_PERF = REPORTS / "inference-perf_shared-prefix_router.br.yaml"


def test_the_shipped_reports_load():
    ours, theirs = load_benchmark_reports(OURS, INFERENCE_PERF)
    assert ours.scale == "llmd-kserve" and ours.policy.startswith("default · sim · trace")
    assert ours.n == 500 and ours.errors == 0 and 0 < ours.hit_rate < 1
    assert 0 < ours.ttft.p50 <= ours.ttft.p90 <= ours.ttft.p99 < 10  # seconds
    assert theirs.scale == "inference-perf" and theirs.policy == "inference-perf stage 0"
    assert theirs.n == 32 and theirs.rate == 4.0 and theirs.errors == 0
    assert 0 < theirs.tpot.p50 < theirs.e2e.p50 < 5 and theirs.throughput_rps > 0


def test_units_are_converted_to_seconds_and_percent_to_a_fraction():
    doc = {"version": "0.2", "run": {"uid": "x", "description": "mine"},
           "results": {"request_performance": {"aggregate": {
               "requests": {"total": 3, "failures": 1},
               "latency": {"time_to_first_token": {"units": "ms", "mean": 300, "p50": 250, "p90": 400},
                           "inter_token_latency": {"units": "ms/token", "mean": 20, "p50": 20}}}},
               "observability": {"vllm_prefix_cache_hit_rate": {"aggregated": {"units": "percent", "mean": 40}}}}}
    p = report_point(doc)
    assert (p.policy, p.n, p.errors) == ("mine", 3, 1)
    assert p.ttft.p50 == pytest.approx(0.25) and p.ttft.p90 == pytest.approx(0.4) and p.ttft.p99 is None
    assert p.tpot.p50 == pytest.approx(0.02) and p.hit_rate == pytest.approx(0.4)


def test_llm_d_examples_of_both_versions_and_several_documents_per_file(tmp_path):
    pytest.importorskip("llmd_benchmark_report")
    pkg = importlib.resources.files("llmd_benchmark_report")
    v02 = yaml.safe_load((pkg / "br_v0_2_example.yaml").read_text())
    v01 = yaml.safe_load((pkg / "br_v0_1_example.yaml").read_text())
    both = tmp_path / "both.yaml"
    both.write_text(yaml.safe_dump_all([v02, v01]))
    a, b = load_benchmark_reports(both)
    assert a.rate == 10 and a.ttft.p50 == pytest.approx(0.03622930939309299) and a.hit_rate == pytest.approx(0.653)
    assert b.rate == 1.34 and b.ttft.p50 == pytest.approx(0.203539535985328e-3)  # v0.1 in ms
    as_list = tmp_path / "list.json"
    as_list.write_text(json.dumps([v02, v02], default=str))
    assert len(load_benchmark_reports(as_list)) == 2


def test_what_is_not_a_report_is_a_clear_error(tmp_path):
    (tmp_path / "bench.json").write_text(json.dumps({"workload": {}, "runs": []}))
    with pytest.raises(ValueError, match="not a Benchmark Report"):
        load_benchmark_reports(tmp_path / "bench.json")
    (tmp_path / "bad.yaml").write_text("a: [\n")
    with pytest.raises(ValueError, match="not YAML or JSON"):
        load_benchmark_reports(tmp_path / "bad.yaml")
    with pytest.raises(ValueError, match="cannot read"):
        load_benchmark_reports(tmp_path / "missing.yaml")
    (tmp_path / "scalar.yaml").write_text("5\n")
    with pytest.raises(ValueError, match="no Benchmark Report"):
        load_benchmark_reports(tmp_path / "scalar.yaml")


def test_side_by_side_draws_each_run_in_ms():
    points = load_benchmark_reports(OURS, INFERENCE_PERF)
    fig = side_by_side(points)
    bars = {(t.name, t.xaxis): t for t in fig.data}
    assert len(fig.data) == 3 * 3 + 1  # TTFT, TPOT, E2E x p50/p90/p99, and the hit rate
    ttft_p50 = bars[("p50", "x")]
    assert list(ttft_p50.y) == pytest.approx([p.ttft.p50 * 1000 for p in points])
    assert list(bars[("hit rate", "x4")].y)[0] == pytest.approx(points[0].hit_rate * 100)
    assert "inference-perf stage 0 · inference-perf @4/s" in list(ttft_p50.x)
