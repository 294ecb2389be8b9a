import json
from pathlib import Path

import pytest
from kfp import dsl

from llmd_kserve.errors import ConfigError
from pipelines.components._testing import artifact, interface
from pipelines.components.benchmark.component import benchmark

SMALL = {"num_groups": 2, "prompts_per_group": 6, "system_prompt_len": 512, "question_len": 32, "output_len": 8}


def test_interface():
    params, ins, outs = interface(benchmark)
    assert outs == {"results": "system.Dataset", "report": "system.HTML", "metrics": "system.Metrics"}
    assert ins == {"trace": "system.Dataset"}
    assert params["trace_params"] == "STRUCT"
    assert params["workload_params"] == "STRUCT" and params["sweep"] == "LIST" and params["rate"] == "NUMBER_DOUBLE"


def _run(tmp_path, **kw):
    outs = {k: artifact(t, tmp_path, k) for k, t in (("results", dsl.Dataset), ("report", dsl.HTML),
                                                     ("metrics", dsl.Metrics))}
    args = dict(target="sim", workload="shared-prefix", workload_params=SMALL, rate=4.0, sweep=[],
                num_requests=12, slo_ttft=0.5, slo_tpot=0.05, seed=0, config="default", engines=2, num_blocks=0,
                time_scale=1.0) | kw
    benchmark.python_func(**outs, **args)
    return outs


def test_sweep_in_the_simulator_writes_json_html_and_metrics(tmp_path):
    outs = _run(tmp_path, sweep=[2.0, 6.0])
    doc = json.loads(Path(outs["results"].path).read_text())
    assert [r["summary"]["n"] for r in doc["runs"]] == [12, 12]
    assert "<html" in Path(outs["report"].path).read_text()[:200].lower()
    m = outs["metrics"].metadata
    assert 0 < m["ttft_p50"] <= m["ttft_p90"] < 5 and 0 < m["tpot_p50"] < 0.05
    assert m["goodput_rps"] > 0 and 0 <= m["cache_hit_rate"] <= 1 and m["requests"] == 24
    assert {"goodput_rps_0", "goodput_rps_1"} <= set(m)


def test_a_trace_input_is_replayed_at_its_own_times(tmp_path):
    trace = Path(__file__).resolve().parents[3] / "benchmarks" / "traces" / "mooncake_conversation_500.jsonl"
    outs = _run(tmp_path, trace=dsl.Dataset(name="trace", uri=str(trace)), num_requests=0,
                trace_params={"max_requests": 16.0, "window": "0:60", "time_scale": 0.25})
    doc = json.loads(Path(outs["results"].path).read_text())
    (run,) = doc["runs"]
    assert run["arrival"] == "trace" and run["summary"]["n"] == 16 and run["summary"]["errors"] == 0
    assert doc["workload"]["time_scale"] == 0.25 and doc["workload"]["trace_fit"]["max_model_len"] == 16384
    with pytest.raises(ConfigError, match="unknown trace parameter"):
        _run(tmp_path, trace=dsl.Dataset(name="trace", uri=str(trace)), trace_params={"speed": 2})


def test_bad_workload_parameter_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="bogus"):
        _run(tmp_path, workload_params={"bogus": 1})
