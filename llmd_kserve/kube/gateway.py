"""The Gateway API form: engines in an InferencePool, our scheduler as its Endpoint Picker, an HTTPRoute to it.

Objects (apply order): the EPP's scheduler ConfigMap, ServiceAccount + Role/RoleBinding (pod discovery; Leases for
leader election), the EPP Deployment (``llmd-kserve epp``; gRPC liveness/readiness probes on its health services; with
``epp.hot_standby``, two replicas with ``--leader-elect``: only the leader is ready, so the Service sends to it alone)
and Service, the engine
runtime and pools (as in the other modes), the ``InferencePool`` (``inference.networking.k8s.io/v1``: engine pods by
label, ``targetPorts``, ``endpointPickerRef`` to the EPP Service with ``failureMode``), a ``Gateway`` and an
``HTTPRoute`` whose backend is the pool. Any Gateway API Inference Extension gateway (kgateway, Istio, Envoy Gateway,
GKE) then calls the EPP over ext_proc for every request.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from llmd_kserve.gateway_routes import ALLOWED_PATHS
from llmd_kserve.kube.k8s import client, field_env, metadata, port, resources, serialize
from llmd_kserve.kube.pools import pool_isvc
from llmd_kserve.kube.router import CONFIG_DIR, CONFIG_KEY, CONFIG_PATH, _ordered, config_text
from llmd_kserve.kube.runtime import serving_runtime
from llmd_kserve.kube.spec import POOL_LABEL, DeploymentSpec

EPP_GRPC_PORT = 9002
EPP_METRICS_PORT = 9090
FailureMode = Literal["FailOpen", "FailClose"]


def epp_name(spec: DeploymentSpec) -> str:
    return f"{spec.name}-epp"


def gateway_pool_name(spec: DeploymentSpec) -> str:
    return f"{spec.name}-pool"


def _epp_labels(spec: DeploymentSpec) -> dict[str, str]:
    return {"app.kubernetes.io/name": epp_name(spec), "app.kubernetes.io/instance": spec.name}


def epp_config_map(spec: DeploymentSpec) -> dict[str, Any]:
    out = serialize(client().V1ConfigMap(api_version="v1", kind="ConfigMap", data={CONFIG_KEY: config_text(spec)}))
    out["metadata"] = metadata(spec, f"{epp_name(spec)}-config", "epp")
    return _ordered(out)


def epp_rbac(spec: DeploymentSpec) -> list[dict[str, Any]]:
    """ServiceAccount, and a Role + RoleBinding to get/list/watch pods (the pool's membership) and, for a hot
    standby, to get/create/update its Lease."""
    c = client()
    name = epp_name(spec)
    sa = serialize(c.V1ServiceAccount(api_version="v1", kind="ServiceAccount"))
    rules = [c.V1PolicyRule(api_groups=[""], resources=["pods"], verbs=["get", "list", "watch"])]
    if spec.epp.hot_standby:
        rules.append(c.V1PolicyRule(api_groups=["coordination.k8s.io"], resources=["leases"],
                                    verbs=["get", "create", "update"]))
    role = serialize(c.V1Role(api_version="rbac.authorization.k8s.io/v1", kind="Role", rules=rules))
    binding = serialize(c.V1RoleBinding(
        api_version="rbac.authorization.k8s.io/v1", kind="RoleBinding",
        role_ref=c.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="Role", name=name),
        subjects=[c.RbacV1Subject(kind="ServiceAccount", name=name, namespace=spec.namespace)]))
    for obj in (sa, role, binding):
        obj["metadata"] = metadata(spec, name, "epp")
    return [_ordered(o) for o in (sa, role, binding)]


def epp_args(spec: DeploymentSpec, response_mode: str = "headers") -> list[str]:
    return ["epp", "--host=0.0.0.0", f"--grpc-port={EPP_GRPC_PORT}", f"--metrics-port={EPP_METRICS_PORT}", f"--config={CONFIG_PATH}",
            f"--discover-selector={spec.discover_selector}", f"--discover-namespace={spec.namespace}",
            f"--target-ports={spec.engine_port}", f"--kv-events-port={spec.kv_events.port}",
            f"--scrape-interval={spec.router.scrape_interval:g}", f"--tokenizer={spec.router_tokenizer}",
            f"--response-mode={response_mode}", f"--pool-name={gateway_pool_name(spec)}", *leader_args(spec)] + (
            [f"--ttft-slo-ms={spec.autoscaling.ttft_slo_ms:g}"] if spec.autoscaled else [])



def leader_args(spec: DeploymentSpec) -> list[str]:
    """``--leader-elect`` and the Lease (named after the EPP, in its namespace) for a hot standby; else none."""
    e = spec.epp
    if not e.hot_standby:
        return []
    return ["--leader-elect", f"--lease-name={epp_name(spec)}", f"--lease-namespace={spec.namespace}",
            f"--lease-duration={e.lease_duration}", f"--renew-deadline={e.renew_deadline:g}",
            f"--retry-period={e.retry_period:g}"]


def epp_deployment(spec: DeploymentSpec, response_mode: str = "headers") -> dict[str, Any]:
    c = client()

    def grpc_probe(service: str, period: int, failures: int = 3) -> Any:
        return c.V1Probe(grpc=c.V1GRPCAction(port=EPP_GRPC_PORT, service=service), period_seconds=period,
                         failure_threshold=failures)

    standby = spec.epp.hot_standby
    container = c.V1Container(
        name="epp", image=spec.images.llmd, args=epp_args(spec, response_mode),
        env=[field_env("POD_NAMESPACE", "metadata.namespace"),
             *([field_env("POD_NAME", "metadata.name")] if standby else [])],  # the Lease's holderIdentity
        ports=[port(EPP_GRPC_PORT, "grpc"), port(EPP_METRICS_PORT, "metrics")],
        # a hot standby: readiness follows the Lease within a second (the Service then sends to the leader only)
        readiness_probe=grpc_probe("readiness", 1, 1) if standby else grpc_probe("readiness", 2),
        liveness_probe=grpc_probe("liveness", 10),
        resources=resources(spec.router.cpu, spec.router.memory),
        volume_mounts=[c.V1VolumeMount(name="epp-config", mount_path=CONFIG_DIR, read_only=True)])
    spread = c.V1Affinity(pod_anti_affinity=c.V1PodAntiAffinity(
        preferred_during_scheduling_ignored_during_execution=[c.V1WeightedPodAffinityTerm(
            weight=100, pod_affinity_term=c.V1PodAffinityTerm(
                label_selector=c.V1LabelSelector(match_labels=_epp_labels(spec)),
                topology_key="kubernetes.io/hostname"))])) if standby else None  # leader and standby apart
    pod = c.V1PodSpec(
        # the drain (30 s) after, for a leader, the hand-over of the Lease (at most the renew deadline)
        service_account_name=epp_name(spec), containers=[container],
        termination_grace_period_seconds=40 + (math.ceil(spec.epp.renew_deadline) if standby else 0),
        affinity=spread,
        volumes=[c.V1Volume(name="epp-config", config_map=c.V1ConfigMapVolumeSource(name=f"{epp_name(spec)}-config"))])
    dep = c.V1Deployment(api_version="apps/v1", kind="Deployment", spec=c.V1DeploymentSpec(
        replicas=2 if standby else 1, selector=c.V1LabelSelector(match_labels=_epp_labels(spec)),
        template=c.V1PodTemplateSpec(metadata=c.V1ObjectMeta(labels=_epp_labels(spec)), spec=pod)))
    out = serialize(dep)
    out["metadata"] = metadata(spec, epp_name(spec), "epp")
    return _ordered(out)


def epp_service(spec: DeploymentSpec) -> dict[str, Any]:
    c = client()
    svc = c.V1Service(api_version="v1", kind="Service", spec=c.V1ServiceSpec(
        selector=_epp_labels(spec), ports=[
            c.V1ServicePort(name="grpc-ext-proc", port=EPP_GRPC_PORT, target_port=EPP_GRPC_PORT, protocol="TCP",
                            app_protocol="kubernetes.io/h2c"),
            c.V1ServicePort(name="http-metrics", port=EPP_METRICS_PORT, target_port=EPP_METRICS_PORT,
                            protocol="TCP")]))
    out = serialize(svc)
    out["metadata"] = metadata(spec, epp_name(spec), "epp")
    return _ordered(out)


def gateway_inference_pool(spec: DeploymentSpec, failure_mode: FailureMode = "FailClose") -> dict[str, Any]:
    return {
        "apiVersion": "inference.networking.k8s.io/v1",
        "kind": "InferencePool",
        "metadata": metadata(spec, gateway_pool_name(spec), "inference-pool"),
        "spec": {
            "selector": {"matchLabels": {POOL_LABEL: spec.name}},
            "targetPorts": [{"number": spec.engine_port}],
            "endpointPickerRef": {"kind": "Service", "name": epp_name(spec), "port": {"number": EPP_GRPC_PORT},
                                  "failureMode": failure_mode},
        },
    }


def gateway(spec: DeploymentSpec, gateway_class: str = "kgateway") -> dict[str, Any]:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": metadata(spec, f"{spec.name}-gateway", "gateway"),
        "spec": {"gatewayClassName": gateway_class,
                 "listeners": [{"name": "http", "port": 80, "protocol": "HTTP"}]},
    }


def http_route(spec: DeploymentSpec) -> dict[str, Any]:
    """The OpenAI paths (exact matches) to the pool, no other (engines' admin and metrics routes stay inside the
    cluster); no request timeout (LLM streams are long)."""
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": metadata(spec, f"{spec.name}-route", "gateway"),
        "spec": {
            "parentRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": f"{spec.name}-gateway"}],
            "rules": [{
                "matches": [{"path": {"type": "Exact", "value": path}} for path in ALLOWED_PATHS],
                "backendRefs": [{"group": "inference.networking.k8s.io", "kind": "InferencePool",
                                 "name": gateway_pool_name(spec)}],
                "timeouts": {"request": "0s"},
            }],
        },
    }


def render_gateway(spec: DeploymentSpec, *, failure_mode: FailureMode = "FailClose",
                   gateway_class: str = "kgateway", response_mode: str = "headers") -> list[dict[str, Any]]:
    """The whole Gateway API form of ``spec`` (aggregated engines: one pool, role ``both``), in apply order."""
    spec = spec.with_mode("aggregated") if spec.disaggregated else spec
    return [epp_config_map(spec), *epp_rbac(spec), epp_deployment(spec, response_mode), epp_service(spec),
            serving_runtime(spec), *(pool_isvc(spec, r) for r in spec.roles),
            gateway_inference_pool(spec, failure_mode), gateway(spec, gateway_class), http_route(spec)]
