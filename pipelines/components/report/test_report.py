import json
from pathlib import Path

from kfp import dsl

from llmd_kserve.steps import simulate
from pipelines.components._testing import artifact, interface
from pipelines.components.report.component import report


def test_interface():
    params, ins, outs = interface(report)
    assert ins == {"results": "system.Dataset", "extra": "system.Dataset"}
    assert outs == {"html": "system.HTML", "summary": "system.Markdown", "metrics": "system.Metrics",
                    "benchmark_reports": "system.Artifact"}
    assert params == {"title": "STRING"}


def test_merges_two_documents(tmp_path):
    small = {"num_groups": 2, "prompts_per_group": 4, "system_prompt_len": 256, "question_len": 16, "output_len": 4}
    for name, cfg in (("a.json", "default"), ("b.json", "round-robin")):
        simulate(str(tmp_path / name), config=cfg, engines=2, workload_params=small, num_requests=8, rate=2.0)
    outs = {k: artifact(t, tmp_path, k) for k, t in (("html", dsl.HTML), ("summary", dsl.Markdown),
                                                     ("metrics", dsl.Metrics), ("benchmark_reports", dsl.Artifact))}
    report.python_func(results=dsl.Dataset(name="r", uri=str(tmp_path / "a.json")),
                       extra=dsl.Dataset(name="e", uri=str(tmp_path / "b.json")), title="two", **outs)
    md = Path(outs["summary"].path).read_text()
    assert md.startswith("# two") and "| default · sim" in md and "| round-robin · sim" in md
    assert outs["metrics"].metadata["runs"] == 2 and outs["metrics"].metadata["best_goodput_rps"] > 0
    reports = sorted(p.name for p in Path(outs["benchmark_reports"].path).iterdir())
    assert reports == ["0_0.br.json", "1_0.br.json"]  # one Benchmark Report per run of each source
    second = json.loads((Path(outs["benchmark_reports"].path) / "1_0.br.json").read_text())
    assert second["version"] == "0.2.1" and second["scenario"]["stack"][0]["standardized"]["config"] == "round-robin"
