import json

from llmd_kserve.kube import FakeKubeApi
from llmd_kserve.kube.api import KubeApis
from llmd_kserve.steps import deploy as deploy_step
from pipelines.components._testing import final_status, interface
from pipelines.components.teardown.component import teardown


def test_interface_takes_the_final_status():
    params, _, _ = interface(teardown)
    assert params["status"] == "TASK_FINAL_STATUS"
    assert set(params) == {"status", "target", "name", "namespace", "state_dir", "run_id"}


def test_deletes_every_object_of_the_deployment_after_a_failure(monkeypatch):
    api = FakeKubeApi(ready_after=0)
    monkeypatch.setattr(KubeApis, "load", classmethod(lambda cls, *a, **k: api.apis()))
    deploy_step("kserve", spec={"name": "gone"})
    deploy_step("kserve", spec={"name": "kept"})
    removed = json.loads(teardown.python_func(status=final_status("FAILED"), target="kserve", name="gone",
                                              namespace="llmd", state_dir="", run_id="x"))
    assert any(r.startswith("InferenceService/gone-") for r in removed)
    left = {name for (_, _, name) in api.objects}
    assert left and all(n.startswith("kept") for n in left)


def test_nothing_deployed_is_nothing_to_remove(tmp_path):
    out = teardown.python_func(status=final_status("FAILED"), target="local", name="llmd", namespace="llmd",
                               state_dir=str(tmp_path), run_id="never-started")
    assert json.loads(out) == []
