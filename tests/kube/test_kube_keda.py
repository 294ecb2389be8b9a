"""KEDA autoscaling in the rendered manifests: every ScaledObject validates against KEDA's own CRD schema, pools
hand their replicas to it, P/D scales apart or together as the spec says, and the LLMInferenceService form carries
the same policy in KServe's ``scaling.keda``."""

from __future__ import annotations

import json

import pytest
import yaml

from llmd_kserve.cli import main
from llmd_kserve.kube.keda import scaled_objects
from llmd_kserve.kube.render import autoscaled, render, render_llmisvc
from llmd_kserve.kube.spec import MODES, DeploymentSpec, parse_spec


def spec_for(mode: str, **autoscaling) -> DeploymentSpec:
    return DeploymentSpec(mode=mode, autoscaling={"enabled": True, **autoscaling})


def one(objs, kind, name):
    return next(o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name)


def triggers(obj) -> dict[str, dict]:
    return {t["name"]: t for t in obj["spec"]["triggers"]}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("pd", ["separate", "together"])
def test_every_object_validates_and_each_pool_has_a_scaled_object(mode, pd, k8s_validate):
    spec = spec_for(mode, pd=pd, band_queue_per_replica={5: 2, -1: 50})
    objs = render(spec)
    for obj in objs:
        assert k8s_validate(obj) == [], (obj["kind"], obj["metadata"]["name"])
    scaled = [o for o in objs if o["kind"] == "ScaledObject"]
    assert [o["metadata"]["name"] for o in scaled] == [spec.pool_name(r) for r in spec.roles]
    for so in scaled:
        s = so["spec"]
        assert s["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                       "name": f"{so['metadata']['name']}-predictor"}
        assert 1 <= s["minReplicaCount"] <= s["maxReplicaCount"]
        # KEDA's fallback needs at least one AverageValue trigger
        assert any(t["metricType"] == "AverageValue" for t in s["triggers"])
        behavior = s["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
        assert behavior["scaleDown"]["stabilizationWindowSeconds"] == 300
        for t in s["triggers"]:
            assert t["type"] == "prometheus" and set(t["metadata"]) == {"serverAddress", "query", "threshold"}
            assert float(t["metadata"]["threshold"]) > 0
            assert "llmd_router_" in t["metadata"]["query"]


def test_the_crd_schema_catches_a_typo_and_a_bad_type(k8s_validate):
    so = scaled_objects(spec_for("pd"))[0]
    bad = json.loads(json.dumps(so))
    bad["spec"]["minReplicas"] = bad["spec"].pop("minReplicaCount")
    assert any("minReplicas" in e for e in k8s_validate(bad))
    bad = json.loads(json.dumps(so))
    bad["spec"]["triggers"][0]["metadata"]["threshold"] = 4
    assert any("threshold" in e for e in k8s_validate(bad))  # trigger metadata values are strings
    bad = json.loads(json.dumps(so))
    bad["spec"]["triggers"] = []
    assert k8s_validate(bad) != []


def test_off_by_default_and_the_pools_hand_their_replicas_to_keda_when_on():
    assert not any(o["kind"] == "ScaledObject" for m in MODES for o in render(DeploymentSpec(mode=m)))
    spec = spec_for("pd", prefill={"min": 2, "max": 6}, decode={"min": 3, "max": 12}, ttft_slo_ms=750)
    objs = render(spec)
    for role, (low, high) in {"prefill": (2, 6), "decode": (3, 12)}.items():
        isvc = one(objs, "InferenceService", spec.pool_name(role))
        assert isvc["metadata"]["annotations"]["serving.kserve.io/autoscalerClass"] == "external"
        assert (isvc["spec"]["predictor"]["minReplicas"], isvc["spec"]["predictor"]["maxReplicas"]) == (low, high)
        so = one(objs, "ScaledObject", spec.pool_name(role))
        assert (so["spec"]["minReplicaCount"], so["spec"]["maxReplicaCount"]) == (low, high)
    router = one(objs, "InferenceService", spec.router_name)
    assert "--ttft-slo-ms=750" in router["spec"]["predictor"]["containers"][0]["args"]
    ann = router["metadata"]["annotations"]
    assert ann["serving.kserve.io/enable-prometheus-scraping"] == "true" and ann["prometheus.kserve.io/port"] == "8080"
    plain = one(render(DeploymentSpec(mode="pd")), "InferenceService", "llmd-router")
    assert not any(a.startswith(("--ttft-slo-ms", "--flow-per-endpoint"))
                   for a in plain["spec"]["predictor"]["containers"][0]["args"])
    flow = one(render(DeploymentSpec(mode="pd", router={"flow_per_endpoint": 64})), "InferenceService", "llmd-router")
    assert "--flow-per-endpoint=64" in flow["spec"]["predictor"]["containers"][0]["args"]


def test_pd_separate_scales_prefill_on_queue_and_ttft_and_decode_on_kv_usage():
    objs = scaled_objects(spec_for("pd", band_queue_per_replica={5: 2}))
    prefill, decode = (triggers(o) for o in objs)
    assert sorted(prefill) == ["queue", "queue-band-5", "ttft"] and sorted(decode) == ["kv-usage"]
    q = prefill["queue"]["metadata"]
    assert q["query"] == ('sum(llmd_router_queue_depth{namespace="llmd",pod=~"llmd-router-predictor-.*",'
                          'band!~"-.*"})') and q["threshold"] == "4"
    assert 'band="5"' in prefill["queue-band-5"]["metadata"]["query"]
    assert prefill["ttft"]["metricType"] == "Value" and prefill["ttft"]["metadata"]["threshold"] == "0.8"
    assert "llmd_router_ttft_headroom_seconds" in prefill["ttft"]["metadata"]["query"]
    kv = decode["kv-usage"]["metadata"]
    assert 'role="decode"' in kv["query"] and kv["threshold"] == "0.7"


def test_pd_together_gives_both_pools_every_signal_in_proportion_to_their_replicas():
    spec = spec_for("pd", pd="together", selector='job="llmd-router"')
    assert (spec.prefill.replicas, spec.decode.replicas) == (1, 2)
    prefill, decode = (triggers(o) for o in scaled_objects(spec))
    assert sorted(prefill) == sorted(decode) == ["kv-usage", "queue", "ttft"]
    # 4 waiting per replica of the deployment (3 replicas): the prefill pool takes 1/3 of them, decode 2/3
    assert (prefill["queue"]["metadata"]["threshold"], decode["queue"]["metadata"]["threshold"]) == ("12", "6")
    # decode holds the KV: prefill follows it at 1 replica per 2 decode replicas
    assert (prefill["kv-usage"]["metadata"]["threshold"], decode["kv-usage"]["metadata"]["threshold"]) == ("1.4", "0.7")
    assert all('job="llmd-router"' in t["metadata"]["query"] for t in [*prefill.values(), *decode.values()])


def test_aggregated_scales_its_one_pool_on_every_signal():
    (so,) = scaled_objects(spec_for("aggregated"))
    t = triggers(so)
    assert so["metadata"]["name"] == "llmd-engine" and sorted(t) == ["kv-usage", "queue", "ttft"]
    assert 'role="both"' in t["kv-usage"]["metadata"]["query"]


@pytest.mark.parametrize("mode", ["aggregated", "pd"])
def test_llminferenceservice_scaling_follows_the_crd(mode, k8s_validate):
    objs = render_llmisvc(spec_for(mode))
    for obj in objs:
        assert k8s_validate(obj) == [], obj["kind"]
    llm = objs[1]["spec"]
    parts = [llm, llm["prefill"]] if mode == "pd" else [llm]
    for part in parts:
        # the CRD's CEL rules (not checked by jsonschema): replicas XOR scaling, keda needs a trigger, min <= max
        assert "replicas" not in part and part["scaling"]["keda"]["triggers"]
        assert part["scaling"]["minReplicas"] <= part["scaling"]["maxReplicas"]
        assert "name" not in part["scaling"]["keda"]["advanced"]["horizontalPodAutoscalerConfig"]
        for t in part["scaling"]["keda"]["triggers"]:
            assert "vllm:" in t["metadata"]["query"]  # KServe runs llm-d's picker here, not our router
    if mode == "pd":
        assert sorted(t["name"] for t in llm["prefill"]["scaling"]["keda"]["triggers"]) == ["queue", "ttft"]
        assert [t["name"] for t in llm["scaling"]["keda"]["triggers"]] == ["kv-usage"]
        assert "kserve-prefill" in llm["prefill"]["scaling"]["keda"]["triggers"][0]["metadata"]["query"]
    assert "scaling" not in render_llmisvc(DeploymentSpec(mode=mode))[1]["spec"]


def test_bad_autoscaling_specs_name_the_field():
    for bad, field in (({"prefill": {"min": 5, "max": 2}}, "prefill"), ({"kv_usage_target": 1.5}, "kv_usage_target"),
                       ({"pd": "sideways"}, "pd"), ({"band_queue_per_replica": {500: 1}}, "band_queue_per_replica")):
        with pytest.raises(Exception) as exc:
            parse_spec({"autoscaling": {"enabled": True, **bad}})
        assert "autoscaling" in str(exc.value) and field in str(exc.value)


def test_render_autoscale_flag_writes_the_scaled_objects(tmp_path):
    assert main(["render", "--out", str(tmp_path), "--mode", "pd", "--autoscale"]) == 0
    names = sorted(p.name for p in tmp_path.glob("scaledobject-*.yaml"))
    assert names == ["scaledobject-llmd-decode.yaml", "scaledobject-llmd-prefill.yaml"]
    listed = yaml.safe_load((tmp_path / "kustomization.yaml").read_text())["resources"]
    assert set(names) <= set(listed)
    assert render(autoscaled(DeploymentSpec(mode="pd"))) == [
        yaml.safe_load((tmp_path / n).read_text()) for n in listed]
