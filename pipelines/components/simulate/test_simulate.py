import json
from pathlib import Path

from kfp import dsl

from pipelines.components._testing import artifact, interface
from pipelines.components.simulate.component import simulate


def test_interface():
    params, _, outs = interface(simulate)
    assert outs == {"results": "system.Dataset", "report": "system.HTML", "metrics": "system.Metrics"}
    assert {"config", "engines", "prefill", "decode", "num_blocks"} <= set(params)


def test_pd_what_if(tmp_path):
    outs = {k: artifact(t, tmp_path, k) for k, t in (("results", dsl.Dataset), ("report", dsl.HTML),
                                                     ("metrics", dsl.Metrics))}
    simulate.python_func(**outs, config="default", engines=0, prefill=1, decode=1, num_blocks=0,
                         workload="rag", workload_params={"num_requests": 10}, rate=2.0, sweep=[],
                         num_requests=10, slo_ttft=1.0, slo_tpot=0.05, seed=1)
    doc = json.loads(Path(outs["results"].path).read_text())
    assert doc["workload"]["mode"] == "sim" and doc["runs"][0]["policy"] == "pd-predicted-ttft"
    assert outs["metrics"].metadata["requests"] == 10
