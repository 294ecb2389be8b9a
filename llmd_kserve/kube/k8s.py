"""Small helpers shared by the renderers: object metadata, downward-API env, probes, camelCase serialisation."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from llmd_kserve.errors import LlmdError
from llmd_kserve.kube.spec import INSTANCE_LABEL, MANAGED_BY_LABEL, MANAGER, PART_OF_LABEL, DeploymentSpec

try:  # the 'kube' extra
    from kubernetes import client as k8s
except ImportError:  # pragma: no cover - exercised only without the extra
    k8s = None  # type: ignore[assignment]

DEPLOYMENT_MODE_ANNOTATION = "serving.kserve.io/deploymentMode"
AUTOSCALER_ANNOTATION = "serving.kserve.io/autoscalerClass"
EXTERNAL_AUTOSCALER = "external"
"""KServe's autoscaler class for replicas another controller (here a KEDA ScaledObject) owns: KServe creates no HPA
or ScaledObject and does not reset the Deployment's replica count."""
PROMETHEUS_SCRAPE_ANNOTATIONS = ("serving.kserve.io/enable-prometheus-scraping", "prometheus.kserve.io/port",
                                 "prometheus.kserve.io/path")
"""KServe copies these into the pod's ``prometheus.io/scrape|port|path`` annotations."""
STANDARD_MODE = "Standard"
"""KServe's raw-Deployment mode (formerly ``RawDeployment``): plain Deployments/Services, several ports per pod."""


def client() -> Any:
    """The ``kubernetes.client`` module, or a clear error naming the extra to install."""
    if k8s is None:
        raise LlmdError("this needs the Kubernetes client: pip install 'llmd-kserve[kube]'")
    return k8s


_API = None


def serialize(obj: Any) -> Any:
    """A ``kubernetes.client`` V1 object (or a structure of them) -> plain camelCase dicts, as the API expects."""
    global _API
    if _API is None:
        _API = client().ApiClient()
    return _API.sanitize_for_serialization(obj)


def labels(spec: DeploymentSpec, component: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    out = {
        PART_OF_LABEL: MANAGER,
        INSTANCE_LABEL: spec.name,
        "app.kubernetes.io/component": component,
        MANAGED_BY_LABEL: MANAGER,
    }
    out.update(extra or {})
    return out


def metadata(spec: DeploymentSpec, name: str, component: str, *, extra_labels: Mapping[str, str] | None = None,
             annotations: Mapping[str, str] | None = None) -> dict[str, Any]:
    meta = client().V1ObjectMeta(name=name, namespace=spec.namespace, labels=labels(spec, component, extra_labels),
                                 annotations=dict(annotations) if annotations else None)
    return serialize(meta)


def field_env(name: str, field_path: str) -> Any:
    """An env var filled by the downward API (``status.podIP``, ``metadata.name``…)."""
    c = client()
    return c.V1EnvVar(name=name, value_from=c.V1EnvVarSource(field_ref=c.V1ObjectFieldSelector(field_path=field_path)))


def env(name: str, value: str) -> Any:
    return client().V1EnvVar(name=name, value=value)


def http_probe(path: str, port: int, *, period: int, failures: int, delay: int = 0, timeout: int = 5) -> Any:
    c = client()
    return c.V1Probe(http_get=c.V1HTTPGetAction(path=path, port=port), period_seconds=period,
                     failure_threshold=failures, initial_delay_seconds=delay or None, timeout_seconds=timeout)


def port(number: int, name: str) -> Any:
    return client().V1ContainerPort(container_port=number, name=name, protocol="TCP")


def resources(cpu: str, memory: str, gpus: int = 0) -> Any:
    req: dict[str, str] = {"cpu": cpu, "memory": memory}
    lim: dict[str, str] = {"memory": memory}
    if gpus:
        req["nvidia.com/gpu"] = lim["nvidia.com/gpu"] = str(gpus)
    return client().V1ResourceRequirements(requests=req, limits=lim)
