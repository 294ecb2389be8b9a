import json

import pytest

from llmd_kserve.kube import FakeKubeApi
from llmd_kserve.kube.api import KubeApis
from llmd_kserve.kube.deploy import DeployTimeoutError
from llmd_kserve.steps import deploy as deploy_step
from llmd_kserve.steps import wait_ready as wait_step
from pipelines.components._testing import interface
from pipelines.components.wait_ready.component import wait_ready


def _install(monkeypatch, api):
    monkeypatch.setattr(KubeApis, "load", classmethod(lambda cls, *a, **k: api.apis()))


def test_interface():
    params, _, _ = interface(wait_ready)
    assert params == {"handle": "STRING", "timeout": "NUMBER_DOUBLE"}


def test_returns_the_router_url_once_ready(monkeypatch):
    api = FakeKubeApi(ready_after=0)
    _install(monkeypatch, api)
    handle = deploy_step("kserve", spec={"name": "w1"})
    out = wait_ready.python_func(handle=json.dumps(handle), timeout=5.0)
    assert out.router_url.startswith("http://") and "w1-router" in out.router_url
    assert json.loads(out.handle)["router_url"] == out.router_url


def test_times_out_on_a_cluster_that_never_gets_ready(monkeypatch):
    api = FakeKubeApi(ready_after=None)
    _install(monkeypatch, api)
    handle = deploy_step("kserve", spec={"name": "w2"})
    t = [0.0]
    with pytest.raises(DeployTimeoutError, match="not ready after 30s"):
        wait_step(handle, timeout=30, poll=10, clock=lambda: t[0], sleep=lambda s: t.__setitem__(0, t[0] + s))
