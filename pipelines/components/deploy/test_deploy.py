import json

import pytest

from llmd_kserve.errors import ClusterError, ConfigError
from llmd_kserve.kube import FakeKubeApi
from llmd_kserve.kube.api import KubeApis
from pipelines.components._testing import interface
from pipelines.components.deploy.component import deploy


@pytest.fixture
def fake(monkeypatch):
    api = FakeKubeApi(ready_after=0)
    monkeypatch.setattr(KubeApis, "load", classmethod(lambda cls, *a, **k: api.apis()))
    return api


def test_interface():
    params, ins, outs = interface(deploy)
    assert set(params) == {"target", "spec", "mode", "engines", "config", "num_blocks", "time_scale", "state_dir",
                           "run_id"}
    assert ins == outs == {}


def test_kserve_applies_the_rendered_objects(fake):
    handle = json.loads(deploy.python_func(target="kserve", spec="name: bench\n", mode="sim", engines=2,
                                           config="default", num_blocks=0, time_scale=1.0, state_dir="",
                                           run_id="r1"))
    assert handle["target"] == "kserve" and handle["name"] == "bench" and handle["namespace"] == "llmd"
    kinds = {k for (k, _, _) in fake.objects}
    assert {"InferenceService", "ServingRuntime", "InferenceGraph", "ConfigMap"} <= kinds
    assert any(o == "InferenceService/bench-router" for o in handle["objects"])


def test_kserve_without_crds_is_a_cluster_error(monkeypatch):
    api = FakeKubeApi(crds=())
    monkeypatch.setattr(KubeApis, "load", classmethod(lambda cls, *a, **k: api.apis()))
    with pytest.raises(ClusterError, match="not installed"):
        deploy.python_func(target="kserve", spec="", mode="sim", engines=2, config="default", num_blocks=0,
                           time_scale=1.0, state_dir="", run_id="r1")


def test_unknown_target_is_a_config_error():
    with pytest.raises(ConfigError, match="target"):
        deploy.python_func(target="gke", spec="", mode="sim", engines=2, config="default", num_blocks=0,
                           time_scale=1.0, state_dir="", run_id="r1")
