"""deploy / status / teardown against FakeKubeApi (a fake API server: no cluster exists here)."""

from __future__ import annotations

import pytest

from llmd_kserve.errors import ClusterError
from llmd_kserve.kube.deploy import DeployTimeoutError, KubeApis, deploy, status, teardown
from llmd_kserve.kube.fake import FakeKubeApi
from llmd_kserve.kube.render import render
from llmd_kserve.kube.spec import DeploymentSpec
from llmd_kserve.stack.procs import free_port


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def run_deploy(fake, spec, **kw):
    clock = FakeClock()
    return deploy(spec, apis=fake.apis(), clock=clock, sleep=clock.sleep, **kw), clock


def stored(fake, kind=None):
    return sorted((k, name) for (k, _ns, name) in fake.objects if kind in (None, k))


def test_deploy_applies_everything_and_waits_until_ready():
    fake = FakeKubeApi(ready_after=3)
    spec = DeploymentSpec(mode="pd")
    st, clock = run_deploy(fake, spec, poll=5.0)
    assert st.ready and clock.now > 0  # it had to poll: the 'controllers' needed a few reads
    assert stored(fake) == sorted((o["kind"], o["metadata"]["name"]) for o in render(spec))
    assert st.router_url == "http://llmd-router-predictor.llmd.svc.cluster.local"
    assert st.graph_url == "http://llmd.llmd.svc.cluster.local"
    isvc = fake.objects[("InferenceService", "llmd", "llmd-decode")]
    assert isvc["spec"] == next(o for o in render(spec) if o["metadata"]["name"] == "llmd-decode")["spec"]


def test_redeploy_replaces_and_prunes_what_the_new_mode_drops():
    fake = FakeKubeApi()
    run_deploy(fake, DeploymentSpec(mode="pd"))
    before = fake.objects[("InferenceService", "llmd", "llmd-router")]["metadata"]["resourceVersion"]
    st, _ = run_deploy(fake, DeploymentSpec(mode="aggregated"))
    assert st.ready
    assert stored(fake, "InferenceService") == [("InferenceService", "llmd-engine"),
                                                ("InferenceService", "llmd-router")]
    assert stored(fake, "ServingRuntime") == [("ServingRuntime", "llmd-vllm")]
    assert fake.objects[("InferenceService", "llmd", "llmd-router")]["metadata"]["resourceVersion"] != before


def test_deploy_times_out_with_the_objects_still_pending():
    fake = FakeKubeApi(ready_after=None)
    with pytest.raises(DeployTimeoutError, match="InferenceService/llmd-decode") as err:
        run_deploy(fake, DeploymentSpec(), timeout=60, poll=10)
    assert "not ready after 60s" in str(err.value)
    st, _ = run_deploy(fake, DeploymentSpec(), wait=False)
    assert st.exists and not st.ready


def test_status_and_teardown():
    fake = FakeKubeApi()
    spec = DeploymentSpec(name="demo", namespace="team-a")
    run_deploy(fake, spec)
    st = status("demo", "team-a", apis=fake.apis())
    assert st.ready and {o.kind for o in st.objects if o.ready} == {"InferenceService", "InferenceGraph"}
    assert not status("other", "team-a", apis=fake.apis()).exists
    deleted = teardown("demo", "team-a", apis=fake.apis())
    assert deleted[0] == "InferenceGraph/demo" and deleted[-1] == "ConfigMap/demo-router-config"
    assert len(deleted) == len(render(spec)) and fake.objects == {}
    assert teardown("demo", "team-a", apis=fake.apis()) == []  # idempotent


def test_teardown_leaves_other_deployments_alone():
    fake = FakeKubeApi()
    run_deploy(fake, DeploymentSpec(name="a"))
    run_deploy(fake, DeploymentSpec(name="b"))
    teardown("a", "llmd", apis=fake.apis())
    assert stored(fake) and all(name.startswith("b") for _, name in stored(fake))


def test_llminferenceservice_form():
    fake = FakeKubeApi()
    st, _ = run_deploy(fake, DeploymentSpec(mode="pd"), form="llmisvc")
    assert st.ready
    assert stored(fake) == [("InferencePool", "llmd-pool"), ("LLMInferenceService", "llmd")]


def test_missing_kserve_crds_fail_before_anything_is_created():
    fake = FakeKubeApi(crds=set())
    with pytest.raises(ClusterError, match=r"CRD servingruntimes.serving.kserve.io .* not installed.*KServe"):
        run_deploy(fake, DeploymentSpec())
    assert fake.objects == {}
    # status/teardown tolerate the optional CRDs (LLMInferenceService, InferencePool) being absent
    fake = FakeKubeApi(crds=FakeKubeApi.ALL_CRDS - {("serving.kserve.io", "llminferenceservices"),
                                                    ("inference.networking.k8s.io", "inferencepools")})
    run_deploy(fake, DeploymentSpec())
    assert status("llmd", apis=fake.apis()).ready
    assert teardown("llmd", apis=fake.apis())
    with pytest.raises(ClusterError, match="inferencepools.inference.networking.k8s.io"):
        run_deploy(fake, DeploymentSpec(mode="pd"), form="llmisvc")


def test_rbac_denied_is_a_clear_error():
    fake = FakeKubeApi(forbidden={("create", "inferenceservices")})
    with pytest.raises(ClusterError, match=r"RBAC denied: cannot create inferenceservices.serving.kserve.io in "
                                           r"namespace 'llmd'"):
        run_deploy(fake, DeploymentSpec())
    fake = FakeKubeApi(forbidden={("create", "roles")})
    with pytest.raises(ClusterError, match="RBAC denied: cannot create roles"):
        run_deploy(fake, DeploymentSpec())


def test_missing_namespace_and_unreachable_server():
    with pytest.raises(ClusterError, match="namespace 'llmd' does not exist"):
        run_deploy(FakeKubeApi(namespaces={"default"}), DeploymentSpec())
    with pytest.raises(ClusterError, match="cannot reach the Kubernetes API server"):
        run_deploy(FakeKubeApi(unreachable=True), DeploymentSpec())
    with pytest.raises(ClusterError, match="cannot reach"):
        status("llmd", apis=FakeKubeApi(unreachable=True).apis())


def test_no_cluster_configured(tmp_path, monkeypatch):
    from kubernetes.config import kube_config

    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(tmp_path / "missing"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(ClusterError, match="no Kubernetes cluster configured"):
        KubeApis.load()
    with pytest.raises(ClusterError, match="no Kubernetes cluster configured"):
        KubeApis.load(kubeconfig=str(tmp_path / "missing"))


def test_connection_refused_with_a_real_client(tmp_path):
    """A kubeconfig pointing at a closed local port: the real client's connection error becomes ClusterError."""
    port = free_port()  # nothing listens there
    cfg = tmp_path / "kubeconfig"
    cfg.write_text(f"""apiVersion: v1
kind: Config
clusters: [{{name: c, cluster: {{server: "http://127.0.0.1:{port}"}}}}]
users: [{{name: u, user: {{token: t}}}}]
contexts: [{{name: x, context: {{cluster: c, user: u}}}}]
current-context: x
""")
    apis = KubeApis.load(kubeconfig=str(cfg))
    apis.core.api_client.configuration.retries = 0
    with pytest.raises(ClusterError, match="cannot reach the Kubernetes API server"):
        status("llmd", apis=apis)
