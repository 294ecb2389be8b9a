"""Reports render from the bench JSON document alone."""

from __future__ import annotations

import json

from rich.console import Console

from llmd_kserve.bench.report import (
    build_report,
    cdf,
    endpoint_load,
    print_table,
    run_entry,
    write_json,
)
from llmd_kserve.bench.stats import RequestResult, result_to_dict, summarize
from llmd_kserve.viz.report_page import write_html


def _report():
    rs = [RequestResult(f"r{i}", True, start=i * 0.5, ttft=0.1 * (i + 1), e2e=1.0, itl=(0.05,) * 3,
                        output_tokens=4, prompt_tokens=10, cached_tokens=i, endpoint=f"http://e{i % 2}")
          for i in range(6)]
    rs.append(RequestResult("bad", False, error="HTTP 500", status=500))
    runs = [run_entry(p, summarize(rs, 3.0), [result_to_dict(r) for r in rs], scale="live") for p in ("rr", "pfx")]
    return build_report({"kind": "shared-prefix", "num_groups": 2}, runs)


def test_cdf_and_endpoint_load():
    assert cdf([3.0, 1.0, 2.0]) == ([1.0, 2.0, 3.0], [1 / 3, 2 / 3, 1.0])
    load = endpoint_load([{"endpoint": "a", "start": 0.0, "e2e": 2.0}, {"endpoint": "a", "start": 1.0, "e2e": 2.0},
                          {"endpoint": "b", "start": 0.0, "e2e": None}])
    assert list(load) == ["a"]
    assert load["a"] == ([0.0, 0.0, 1.0, 2.0, 3.0], [0, 1, 2, 1, 0])


def test_json_html_and_table(tmp_path):
    report = _report()
    write_json(report, tmp_path / "r.json")
    back = json.loads((tmp_path / "r.json").read_text())
    assert back["workload"]["kind"] == "shared-prefix"
    assert [r["policy"] for r in back["runs"]] == ["rr", "pfx"] and len(back["runs"][0]["requests"]) == 7
    write_html(report, tmp_path / "r.html")
    page = (tmp_path / "r.html").read_text()
    assert "TTFT CDF" in page and "In-flight requests per endpoint" in page and "http:\\u002f\\u002fe1" in page
    assert "<script src=\"http" not in page and len(page) > 1_000_000  # plotly.js inlined, no CDN
    assert page.count("plotly.js v") == 1  # embedded once
    assert page.index("class='claim'") < page.index("TTFT by policy") < page.index("<details>")  # claim, charts, settings
    assert "rr · live" in page and "TTFT p90" in page  # one headline per policy
    assert page.index("<details>") < page.index("&quot;num_groups&quot;: 2")  # the settings are folded, at the end
    console = Console(record=True, width=200)
    print_table(report, console)
    text = console.export_text()
    assert "rr · live" in text and "TTFT p50" in text


def test_plotly_is_optional(monkeypatch, tmp_path, capsys):
    """Without plotly the JSON and the table still work; asking for HTML is a one-line error before any run."""
    from llmd_kserve.bench import report as rep
    from llmd_kserve.cli import main

    monkeypatch.setattr(rep, "plotly_available", lambda: False)
    code = main(["bench", "--sim", "--engines", "2", "--num-requests", "4", "--rate", "5", "--no-progress",
                 "--json", str(tmp_path / "b.json"), "--html", str(tmp_path / "b.html")])
    assert code == 2 and "llmd-kserve[report]" in capsys.readouterr().err
    assert not (tmp_path / "b.json").exists()  # nothing ran
    assert main(["bench", "--sim", "--engines", "2", "--num-requests", "4", "--rate", "5", "--no-progress",
                 "--json", str(tmp_path / "b.json")]) == 0
    assert (tmp_path / "b.json").exists()
