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


def test_hot_standby_epp_two_replicas_elect_a_leader_on_a_lease_the_role_allows(k8s_validate):
    from llmd_kserve.cli import build_parser
    from llmd_kserve.cli.serve import _lease_settings

    spec = DeploymentSpec(epp={"hot_standby": True, "lease_duration": 8, "renew_deadline": 5, "retry_period": 1})
    k = by_kind(render_gateway(spec))
    dep, role = k["Deployment"], k["Role"]
    assert k8s_validate(dep) == [] and k8s_validate(role) == []
    assert dep["spec"]["replicas"] == 2
    pod = dep["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}} in container["env"]
    assert container["readinessProbe"]["grpc"]["service"] == "readiness"
    assert container["readinessProbe"]["periodSeconds"] == 1
    assert pod["affinity"]["podAntiAffinity"]
    args = build_parser().parse_args(container["args"])
    lease = _lease_settings(args)
    assert (lease.name, lease.namespace) == (dep["metadata"]["name"], spec.namespace)
    assert (lease.lease_duration, lease.renew_deadline, lease.retry_period) == (8, 5.0, 1.0)
    leases = [r for r in role["rules"] if r["apiGroups"] == ["coordination.k8s.io"]]
    assert leases == [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                       "verbs": ["get", "create", "update"]}]


def test_without_hot_standby_one_epp_and_no_lease_rights():
    from llmd_kserve.cli import build_parser

    k = by_kind(render_gateway(DeploymentSpec(epp={"hot_standby": False})))
    assert k["Deployment"]["spec"]["replicas"] == 1
    args = build_parser().parse_args(k["Deployment"]["spec"]["template"]["spec"]["containers"][0]["args"])
    assert not args.leader_elect
    assert all(r["apiGroups"] == [""] for r in k["Role"]["rules"])


def test_lease_timing_that_client_go_would_refuse_is_a_spec_error():
    from llmd_kserve.errors import ConfigError
    from llmd_kserve.kube.spec import parse_spec

    with pytest.raises(ConfigError, match="renew deadline"):
        parse_spec({"epp": {"lease_duration": 5}})
