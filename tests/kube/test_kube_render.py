"""Rendering: every object validates against its real CRD schema, and carries what vLLM/KServe/the router need."""

from __future__ import annotations

import json

import pytest
import yaml

from llmd_kserve.errors import ConfigError
from llmd_kserve.kube.render import render, render_llmisvc, to_yaml
from llmd_kserve.kube.spec import MODES, POOL_LABEL, ROLE_LABEL, DeploymentSpec, PoolSpec, Resources, parse_spec


def by_kind(objs, kind):
    return [o for o in objs if o["kind"] == kind]


def one(objs, kind, name):
    return next(o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name)


def arg_value(args, flag):
    return next(a.split("=", 1)[1] for a in args if a.startswith(flag + "="))


@pytest.mark.parametrize("mode", MODES)
def test_every_object_validates_against_its_crd(mode, k8s_validate):
    objs = render(DeploymentSpec(mode=mode))
    assert {o["kind"] for o in objs} == {"ConfigMap", "ServiceAccount", "Role", "RoleBinding", "ServingRuntime",
                                         "InferenceService", "InferenceGraph"}
    for obj in objs:
        assert k8s_validate(obj) == [], (obj["kind"], obj["metadata"]["name"])


@pytest.mark.parametrize("mode", ["aggregated", "pd"])
def test_llminferenceservice_form_validates(mode, k8s_validate):
    objs = render_llmisvc(DeploymentSpec(mode=mode))
    assert [o["kind"] for o in objs] == ["InferencePool", "LLMInferenceService"]
    for obj in objs:
        assert k8s_validate(obj) == [], obj["kind"]
    llm = objs[1]["spec"]
    assert ("prefill" in llm) == (mode == "pd")
    assert llm["router"]["scheduler"]["pool"]["ref"]["name"] == objs[0]["metadata"]["name"]
    assert llm["router"]["scheduler"]["config"]["inline"]["kind"] == "EndpointPickerConfig"


def test_validation_catches_typos_and_bad_types(k8s_validate):
    isvc = one(render(DeploymentSpec()), "InferenceService", "llmd-decode")
    bad = json.loads(json.dumps(isvc))
    bad["spec"]["predictor"]["modle"] = bad["spec"]["predictor"].pop("model")
    assert any("modle" in e for e in k8s_validate(bad))
    bad = json.loads(json.dumps(isvc))
    bad["spec"]["predictor"]["minReplicas"] = "two"
    assert any("minReplicas" in e for e in k8s_validate(bad))


def test_vllm_runtime_flags_ports_probes_and_downward_api():
    spec = DeploymentSpec(mode="pd")
    rt = one(render(spec), "ServingRuntime", "llmd-vllm")
    (c,) = rt["spec"]["containers"]
    assert c["name"] == "kserve-container" and c["image"].startswith("vllm/vllm-openai")
    assert c["command"] == ["python3", "-m", "vllm.entrypoints.openai.api_server"]
    assert "--enable-prefix-caching" in c["args"] and "--port=8000" in c["args"]
    events = json.loads(arg_value(c["args"], "--kv-events-config"))
    assert events == {"enable_kv_cache_events": True, "publisher": "zmq", "endpoint": "tcp://*:5557",
                      "topic": "kv@$(POD_IP):8000@llama-3.1-8b"}
    assert json.loads(arg_value(c["args"], "--kv-transfer-config")) == {"kv_connector": "NixlConnector",
                                                                        "kv_role": "kv_both"}
    env = {e["name"]: e for e in c["env"]}
    assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"  # expands $(POD_IP) in the topic
    assert env["VLLM_NIXL_SIDE_CHANNEL_HOST"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    assert env["VLLM_NIXL_SIDE_CHANNEL_PORT"]["value"] == "5600"
    assert sorted(p["containerPort"] for p in c["ports"]) == [5557, 5600, 8000]
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert c[probe]["httpGet"] == {"path": "/health", "port": 8000}


def test_aggregated_has_no_kv_transfer_and_one_pool_of_role_both():
    objs = render(DeploymentSpec(mode="aggregated"))
    (c,) = one(objs, "ServingRuntime", "llmd-vllm")["spec"]["containers"]
    assert not any(a.startswith("--kv-transfer-config") for a in c["args"])
    assert 5600 not in [p["containerPort"] for p in c["ports"]]
    pools = [o for o in by_kind(objs, "InferenceService") if o["metadata"]["name"] != "llmd-router"]
    assert [p["metadata"]["labels"][ROLE_LABEL] for p in pools] == ["both"]


def test_pools_reference_runtime_with_gpus_labels_and_fixed_replicas():
    spec = DeploymentSpec(mode="pd", prefill=PoolSpec(replicas=3, resources=Resources(gpus=2, memory="80Gi")),
                          decode=PoolSpec(replicas=4, extra_args=("--max-model-len=8192",)))
    objs = render(spec)
    pre, dec = one(objs, "InferenceService", "llmd-prefill"), one(objs, "InferenceService", "llmd-decode")
    for isvc, role, n in ((pre, "prefill", 3), (dec, "decode", 4)):
        p = isvc["spec"]["predictor"]
        assert p["model"]["runtime"] == "llmd-vllm" and p["model"]["modelFormat"] == {"name": "vLLM"}
        assert p["model"]["storageUri"] == spec.model.uri
        assert p["minReplicas"] == p["maxReplicas"] == n
        assert p["labels"] == {POOL_LABEL: "llmd", ROLE_LABEL: role}
        assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Standard"
    assert pre["spec"]["predictor"]["model"]["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert dec["spec"]["predictor"]["model"]["args"] == ["--max-model-len=8192"]


def test_sim_mode_runs_our_engine_without_gpus():
    objs = render(DeploymentSpec(mode="sim"))
    (c,) = one(objs, "ServingRuntime", "llmd-sim")["spec"]["containers"]
    assert c["command"] == ["llmd-kserve"] and c["args"][0] == "engine"
    assert arg_value(c["args"], "--kv-events-topic") == "kv@$(POD_IP):8000@llama-3.1-8b"
    for role in ("prefill", "decode"):
        model = one(objs, "InferenceService", f"llmd-{role}")["spec"]["predictor"]["model"]
        assert model["args"] == [f"--role={role}"]
        assert "storageUri" not in model
        assert "nvidia.com/gpu" not in json.dumps(model["resources"])


def test_router_discovers_exactly_the_engine_pods_and_can_watch_them():
    spec = DeploymentSpec(mode="pd")
    objs = render(spec)
    router = one(objs, "InferenceService", "llmd-router")
    pred = router["spec"]["predictor"]
    (c,) = pred["containers"]
    assert c["args"][0] == "router" and arg_value(c["args"], "--config") == "/etc/llmd/config.yaml"
    key, value = arg_value(c["args"], "--discover-selector").split("=")
    engines = [o for o in by_kind(objs, "InferenceService") if o is not router]
    assert all(o["spec"]["predictor"]["labels"][key] == value for o in engines)
    assert key not in router["metadata"]["labels"]  # the router must not discover itself
    assert pred["volumes"][0]["configMap"]["name"] == by_kind(objs, "ConfigMap")[0]["metadata"]["name"]
    assert c["volumeMounts"][0]["mountPath"] == "/etc/llmd"
    # traffic once its KV index is warm (readiness); restarted only when it stops answering (liveness)
    assert c["readinessProbe"]["httpGet"]["path"] == "/ready" and c["livenessProbe"]["httpGet"]["path"] == "/health"
    sa = pred["serviceAccountName"]
    (binding,) = by_kind(objs, "RoleBinding")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa, "namespace": "llmd"}]
    (role,) = by_kind(objs, "Role")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]


def test_graph_root_steps_into_the_router():
    objs = render(DeploymentSpec())
    (graph,) = by_kind(objs, "InferenceGraph")
    (step,) = graph["spec"]["nodes"]["root"]["steps"]
    assert graph["spec"]["nodes"]["root"]["routerType"] == "Sequence"
    assert step["serviceUrl"].startswith("http://llmd-router-predictor.llmd.svc.cluster.local/")


def test_inline_router_config_and_bad_specs():
    cfg = {"apiVersion": "inference.networking.x-k8s.io/v1alpha1", "kind": "EndpointPickerConfig",
           "plugins": [{"type": "queue-scorer"}, {"type": "max-score-picker"}],
           "schedulingProfiles": [{"name": "default", "plugins": [{"pluginRef": "queue-scorer"},
                                                                   {"pluginRef": "max-score-picker"}]}]}
    objs = render(parse_spec({"router": {"config": cfg}}))
    assert yaml.safe_load(by_kind(objs, "ConfigMap")[0]["data"]["config.yaml"]) == cfg
    with pytest.raises(ConfigError):
        render(parse_spec({"router": {"config": {"plugins": [{"type": "no-such-plugin"}]}}}))
    with pytest.raises(ConfigError, match="router.config"):
        render(parse_spec({"router": {"config": "no-such-config"}}))
    with pytest.raises(ConfigError, match="name"):
        parse_spec({"name": "Bad_Name"})
    with pytest.raises(ConfigError, match="decode.replicas"):
        parse_spec({"decode": {"replicas": -1}})
    with pytest.raises(ConfigError):
        render_llmisvc(DeploymentSpec(mode="sim"))


def test_yaml_is_plain_and_multiline_config_is_a_block():
    text = to_yaml(render(DeploymentSpec())[0])
    assert "config.yaml: |" in text
    assert yaml.safe_load(text) == render(DeploymentSpec())[0]
