import json
from pathlib import Path

import pytest
import yaml
from kfp import dsl

from llmd_kserve.errors import ConfigError
from pipelines.components._testing import artifact, interface
from pipelines.components.plan.component import plan


def test_interface():
    params, _, outs = interface(plan)
    assert outs == {"plan_json": "system.Dataset", "manifests": "system.Artifact", "metrics": "system.Metrics"}
    assert params == {"workload": "STRING", "rate": "NUMBER_DOUBLE", "slo_ttft": "NUMBER_DOUBLE",
                      "slo_tpot": "NUMBER_DOUBLE", "attainment": "NUMBER_DOUBLE", "max_replicas": "NUMBER_INTEGER",
                      "seeds": "LIST", "duration": "NUMBER_DOUBLE", "configs": "LIST", "pd_configs": "LIST",
                      "headroom": "BOOLEAN", "name": "STRING", "namespace": "STRING"}


def _outs(tmp_path):
    return {k: artifact(t, tmp_path, k) for k, t in (("plan_json", dsl.Dataset), ("manifests", dsl.Artifact),
                                                     ("metrics", dsl.Metrics))}


@pytest.mark.slow
def test_plan_json_manifests_and_metrics(tmp_path):
    outs = _outs(tmp_path)
    plan.python_func(**outs, workload="shared-prefix", rate=20.0, duration=4.0, max_replicas=4, configs=["default"],
                     pd_configs=[], headroom=False, name="cap", namespace="ml")
    doc = json.loads(Path(outs["plan_json"].path).read_text())
    m = outs["metrics"].metadata
    assert m["replicas"] == doc["plan"]["replicas"] == m["decode"] and m["prefill"] == 0
    assert m["attainment"] >= 0.95 and m["headroom_rate"] == 0
    isvc = yaml.safe_load((Path(outs["manifests"].path) / "inferenceservice-cap-engine.yaml").read_text())
    assert isvc["metadata"]["namespace"] == "ml" and isvc["spec"]["predictor"]["minReplicas"] == m["replicas"]


def test_bad_workload_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="unknown workload 'nope'"):
        plan.python_func(**_outs(tmp_path), workload="nope", rate=1.0)
