"""The router node: scheduler-config ConfigMap, ServiceAccount + RBAC for pod discovery, the router InferenceService."""

from __future__ import annotations

from importlib import resources as importlib_resources
from pathlib import Path
from typing import Any

import yaml

from llmd_kserve.errors import ConfigError
from llmd_kserve.kube.k8s import (
    AUTOSCALER_ANNOTATION,
    DEPLOYMENT_MODE_ANNOTATION,
    PROMETHEUS_SCRAPE_ANNOTATIONS,
    STANDARD_MODE,
    client,
    field_env,
    http_probe,
    metadata,
    port,
    resources,
    serialize,
)
from llmd_kserve.kube.spec import DeploymentSpec

CONFIG_KEY = "config.yaml"
CONFIG_DIR = "/etc/llmd"
CONFIG_PATH = f"{CONFIG_DIR}/{CONFIG_KEY}"


def shipped_config_path(name: str) -> Path | None:
    """``llmd_kserve/config/shipped/<name>.yaml`` if the scheduler package ships that config."""
    ref = importlib_resources.files("llmd_kserve.config") / "shipped" / f"{name}.yaml"
    return Path(str(ref)) if ref.is_file() else None


def config_text(spec: DeploymentSpec) -> str:
    """The EndpointPickerConfig YAML embedded in the ConfigMap: a shipped config, a file, or the inline mapping.

    Validated with the router's own loader, so a bad config fails at render time, not in the pod.
    """
    from llmd_kserve.config.loader import parse_config

    cfg = spec.router_config
    if isinstance(cfg, dict):
        text, source = yaml.safe_dump(cfg, sort_keys=False), "router.config"
    else:
        path = shipped_config_path(cfg) or Path(cfg)
        if not path.is_file():
            raise ConfigError(f"no shipped scheduler config or file named {cfg!r}", "router.config")
        text, source = path.read_text(), str(path)
    parse_config(yaml.safe_load(text), source)
    return text


def config_map(spec: DeploymentSpec) -> dict[str, Any]:
    c = client()
    cm = c.V1ConfigMap(api_version="v1", kind="ConfigMap", data={CONFIG_KEY: config_text(spec)})
    out = serialize(cm)
    out["metadata"] = metadata(spec, spec.config_map_name, "router")
    return _ordered(out)


def service_account(spec: DeploymentSpec) -> dict[str, Any]:
    out = serialize(client().V1ServiceAccount(api_version="v1", kind="ServiceAccount"))
    out["metadata"] = metadata(spec, spec.service_account_name, "router")
    return _ordered(out)


def role(spec: DeploymentSpec) -> dict[str, Any]:
    """Read-only access to pods in the namespace: what discovery's list + watch needs."""
    c = client()
    r = c.V1Role(api_version="rbac.authorization.k8s.io/v1", kind="Role",
                 rules=[c.V1PolicyRule(api_groups=[""], resources=["pods"], verbs=["get", "list", "watch"])])
    out = serialize(r)
    out["metadata"] = metadata(spec, f"{spec.name}-pod-reader", "router")
    return _ordered(out)


def role_binding(spec: DeploymentSpec) -> dict[str, Any]:
    c = client()
    rb = c.V1RoleBinding(
        api_version="rbac.authorization.k8s.io/v1", kind="RoleBinding",
        role_ref=c.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="Role", name=f"{spec.name}-pod-reader"),
        subjects=[c.RbacV1Subject(kind="ServiceAccount", name=spec.service_account_name, namespace=spec.namespace)])
    out = serialize(rb)
    out["metadata"] = metadata(spec, f"{spec.name}-pod-reader", "router")
    return _ordered(out)


def router_args(spec: DeploymentSpec) -> list[str]:
    args = ["router", "--host=0.0.0.0", f"--port={spec.router.port}", f"--config={CONFIG_PATH}",
            f"--discover-selector={spec.discover_selector}", f"--discover-namespace={spec.namespace}",
            f"--scrape-interval={spec.router.scrape_interval:g}", f"--tokenizer={spec.router_tokenizer}",
            f"--served-model={spec.model.served_name}"]
    if spec.autoscaled:  # the TTFT target its headroom signal is measured against
        args.append(f"--ttft-slo-ms={spec.autoscaling.ttft_slo_ms:g}")
    if spec.router.flow_per_endpoint:
        args.append(f"--flow-per-endpoint={spec.router.flow_per_endpoint}")
    return args


def router_annotations(spec: DeploymentSpec) -> dict[str, str]:
    """Standard mode, fixed replicas; with autoscaling, Prometheus scrapes the router's /metrics (its signals)."""
    out = {DEPLOYMENT_MODE_ANNOTATION: STANDARD_MODE, AUTOSCALER_ANNOTATION: "none"}
    if spec.autoscaled:
        out.update(zip(PROMETHEUS_SCRAPE_ANNOTATIONS, ("true", str(spec.router.port), "/metrics"), strict=True))
    return out


def router_isvc(spec: DeploymentSpec) -> dict[str, Any]:
    """The router as a custom-container InferenceService (our image, ``llmd-kserve router … --discover-selector``)."""
    c = client()
    container = c.V1Container(
        name="kserve-container",
        image=spec.images.llmd,
        args=router_args(spec),
        env=[field_env("POD_NAMESPACE", "metadata.namespace")],
        ports=[port(spec.router.port, "http")],
        readiness_probe=http_probe("/ready", spec.router.port, period=5, failures=3),
        liveness_probe=http_probe("/health", spec.router.port, period=15, failures=4),
        resources=resources(spec.router.cpu, spec.router.memory),
        volume_mounts=[c.V1VolumeMount(name="router-config", mount_path=CONFIG_DIR, read_only=True)],
    )
    volume = c.V1Volume(name="router-config", config_map=c.V1ConfigMapVolumeSource(name=spec.config_map_name))
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": metadata(spec, spec.router_name, "router", annotations=router_annotations(spec)),
        "spec": {
            "predictor": {
                "minReplicas": spec.router.replicas,
                "maxReplicas": spec.router.replicas,
                "serviceAccountName": spec.service_account_name,
                "containers": [serialize(container)],
                "volumes": [serialize(volume)],
            }
        },
    }


def _ordered(obj: dict[str, Any]) -> dict[str, Any]:
    """apiVersion, kind, metadata first (as kubectl writes them), then the rest."""
    head = {k: obj[k] for k in ("apiVersion", "kind", "metadata") if k in obj}
    return {**head, **{k: v for k, v in obj.items() if k not in head}}
