"""`llmd-kserve demo --quick`: the bench-schema JSON, the HTML report, and the default beating round-robin."""

from __future__ import annotations

import json

import pytest
from rich.console import Console

from llmd_kserve.bench.stats import SUMMARY_KEYS
from llmd_kserve.cli import build_parser
from llmd_kserve.demo import POLICIES, plan, ratios, run_demo


def test_cli_wires_the_demo() -> None:
    a = build_parser().parse_args(["demo", "--quick", "--json", "out.json", "--no-live", "--policies", "default"])
    assert a.quick and a.json == "out.json" and not a.live and a.sim and a.policies == ["default"]
    assert POLICIES == ("round-robin", "load-only", "approx-prefix", "precise-prefix", "llm-d-optimized-baseline",
                        "default")


def test_plan_has_kv_pressure() -> None:
    """More distinct prefixes than one engine's KV cache holds, fewer than the whole cluster's."""
    for quick in (False, True):
        for scale in plan(quick):
            blocks = scale.num_blocks or 26962
            prefix_tokens = scale.workload.num_groups * scale.workload.system_prompt_len
            assert blocks * 16 < prefix_tokens < scale.engines * blocks * 16


@pytest.mark.slow
def test_quick_demo(tmp_path) -> None:
    out, page = tmp_path / "demo.json", tmp_path / "demo.html"
    console = Console(width=160, record=True)
    run_demo(quick=True, json=str(out), html=str(page), policies=("round-robin", "default"), console=console)
    report = json.loads(out.read_text())
    runs = report["runs"]
    assert sorted((r["policy"], r["scale"]) for r in runs) == [
        ("default", "live"), ("default", "sim"), ("round-robin", "live"), ("round-robin", "sim")]
    for r in runs:
        assert set(SUMMARY_KEYS) <= set(r["summary"])
        assert r["summary"]["n"] == len(r["requests"]) > 0 and r["summary"]["errors"] == 0
        assert r["summary"]["shed"] == 0
    by = {(r["policy"], r["scale"]): r["summary"] for r in runs}
    # measured side by side in the same run: the claim at full cluster size (simulated) ...
    sim = ratios(runs, "sim")
    assert sim is not None and sim["claim_met"], sim
    # ... and live, prefix-aware routing hits the cache far more and answers faster
    assert by["default", "live"]["cache_hit_rate"] > by["round-robin", "live"]["cache_hit_rate"] + 0.15
    assert by["default", "live"]["ttft_p90"] < by["round-robin", "live"]["ttft_p90"]
    assert {c["scale"] for c in report["workload"]["claims"]} == {"sim", "live"}
    sweep = {r["policy"]: r["max_rate_in_slo"] for r in report["workload"]["rate_sweep"]}
    assert set(sweep) == {"round-robin", "default"} and sweep["default"] >= sweep["round-robin"]
    assert "plotly" in page.read_text() and "default vs round-robin" in console.export_text()
    html = page.read_text()  # the claim first, then the charts, the settings folded at the end
    assert html.index("default vs round-robin") < html.index("Goodput by policy") < html.index("<details>")
