"""The Gateway API form: every object validates (CRDs strictly, core kinds by round trip) and the references agree."""

from __future__ import annotations

import pytest

from llmd_kserve.kube.gateway import EPP_GRPC_PORT, render_gateway
from llmd_kserve.kube.spec import POOL_LABEL, DeploymentSpec


def by_kind(objs):
    return {o["kind"]: o for o in objs}


@pytest.mark.parametrize("mode", ["sim", "aggregated", "pd"])
def test_gateway_objects_validate(k8s_validate, mode):
    objs = render_gateway(DeploymentSpec(mode=mode))
    assert [o["kind"] for o in objs] == ["ConfigMap", "ServiceAccount", "Role", "RoleBinding", "Deployment", "Service",
                                         "ServingRuntime", "InferenceService", "InferencePool", "Gateway", "HTTPRoute"]
    for obj in objs:
        assert k8s_validate(obj) == [], obj["kind"]


def test_pool_route_and_picker_refer_to_each_other():
    spec = DeploymentSpec(mode="aggregated")
    k = by_kind(render_gateway(spec, failure_mode="FailOpen"))
    pool, svc, dep, route = k["InferencePool"], k["Service"], k["Deployment"], k["HTTPRoute"]
    ref = pool["spec"]["endpointPickerRef"]
    assert ref["failureMode"] == "FailOpen" and ref["port"]["number"] == EPP_GRPC_PORT
    assert ref["name"] == svc["metadata"]["name"]
    assert any(p["port"] == EPP_GRPC_PORT and p["appProtocol"] == "kubernetes.io/h2c" for p in svc["spec"]["ports"])
    assert svc["spec"]["selector"] == dep["spec"]["template"]["metadata"]["labels"]
    assert pool["spec"]["selector"]["matchLabels"] == {POOL_LABEL: spec.name}
    engine_labels = k["InferenceService"]["spec"]["predictor"]["labels"]
    assert engine_labels[POOL_LABEL] == spec.name  # the pool selects the engine pods
    args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[0] == "epp" and f"--discover-selector={POOL_LABEL}={spec.name}" in args
    assert f"--target-ports={spec.engine_port}" in args
    probe = dep["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["grpc"]
    assert probe == {"port": EPP_GRPC_PORT, "service": "readiness"}
    backend = route["spec"]["rules"][0]["backendRefs"][0]
    assert (backend["kind"], backend["name"]) == ("InferencePool", pool["metadata"]["name"])
    assert route["spec"]["parentRefs"][0]["name"] == k["Gateway"]["metadata"]["name"]


def test_epp_container_args_parse_with_the_cli():
    from llmd_kserve.cli import build_parser

    dep = by_kind(render_gateway(DeploymentSpec()))["Deployment"]
    args = build_parser().parse_args(dep["spec"]["template"]["spec"]["containers"][0]["args"])
    assert args.command == "epp" and args.response_mode == "headers" and args.grpc_port == EPP_GRPC_PORT
