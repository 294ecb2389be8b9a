"""steps.bench.headline and steps.report: the metrics a pipeline logs and the merged report."""

from __future__ import annotations

import pytest

from llmd_kserve.errors import ConfigError
from llmd_kserve.steps import headline, markdown, report


def _run(policy: str, goodput: float, ttft: float, hit: float | None) -> dict:
    summary = {"n": 10, "errors": 0, "ttft_p50": ttft, "ttft_p90": 2 * ttft, "tpot_p50": 0.01, "goodput_rps": goodput,
               "slo_attainment": 0.9, "cache_hit_rate": hit}
    return {"policy": policy, "summary": summary, "requests": []}


def test_headline_takes_the_best_run_and_lists_each_rate():
    m = headline({"runs": [_run("a", 2.0, 0.1, 0.5), _run("b", 3.0, 0.2, None)]})
    assert m["goodput_rps"] == 3.0 and m["ttft_p90"] == 0.4 and "cache_hit_rate" not in m
    assert m["goodput_rps_0"] == 2.0 and m["goodput_rps_1"] == 3.0 and m["requests"] == 20


def test_headline_of_nothing_is_an_error():
    with pytest.raises(ConfigError):
        headline({"runs": []})


def test_markdown_table():
    md = markdown({"runs": [_run("default", 2.0, 0.05, 0.75)]}, "t")
    assert "| default | 10 | 50.0 | 100.0 | 10.0 | 2.00 | 0.900 | 0.750 |" in md


def test_report_rejects_a_file_that_is_not_a_bench_document(tmp_path):
    bad = tmp_path / "x.json"
    bad.write_text('{"rows": []}')
    with pytest.raises(ConfigError, match="no runs"):
        report([str(bad)], str(tmp_path / "r.html"), str(tmp_path / "r.md"))
