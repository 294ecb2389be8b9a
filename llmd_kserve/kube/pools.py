"""The engine pools: one InferenceService per llm-d role (prefill, decode, or both), all on the same runtime."""

from __future__ import annotations

from typing import Any

from llmd_kserve.kube.k8s import (
    AUTOSCALER_ANNOTATION,
    DEPLOYMENT_MODE_ANNOTATION,
    EXTERNAL_AUTOSCALER,
    STANDARD_MODE,
    metadata,
    resources,
)
from llmd_kserve.kube.k8s import serialize as _serialize
from llmd_kserve.kube.keda import scaling_range
from llmd_kserve.kube.runtime import MODEL_FORMAT
from llmd_kserve.kube.spec import POOL_LABEL, ROLE_LABEL, DeploymentSpec


def pod_labels(spec: DeploymentSpec, role: str) -> dict[str, str]:
    """Labels on every engine pod of this role: the router's discovery selector plus llm-d's role label."""
    return {POOL_LABEL: spec.name, ROLE_LABEL: role}


def pool_isvc(spec: DeploymentSpec, role: str) -> dict[str, Any]:
    """InferenceService of one engine pool, Standard (raw Deployment) mode: fixed replicas (no autoscaler), or, with
    autoscaling, the pool's range and ``autoscalerClass: external`` (KServe creates no HPA and leaves the replica
    count to the pool's KEDA ScaledObject)."""
    pool = spec.pool(role)
    res = pool.resources
    gpus = 0 if spec.simulated else res.gpus
    cpu, memory = ("1", "1Gi") if spec.simulated else (res.cpu, res.memory)
    model: dict[str, Any] = {"modelFormat": {"name": MODEL_FORMAT}, "runtime": spec.runtime_name}
    if not spec.simulated:
        model["storageUri"] = spec.model.uri
    args = ([f"--role={role}"] if spec.simulated else []) + list(pool.extra_args)
    if args:
        model["args"] = args
    model["resources"] = _serialize(resources(cpu, memory, gpus))
    low, high = pool.replicas, max(pool.replicas, 1)
    autoscaler = "none"
    if spec.autoscaled:  # a ScaledObject (kube.keda) owns the Deployment's replicas between these bounds
        r = scaling_range(spec, role)
        low, high, autoscaler = r.min, r.max, EXTERNAL_AUTOSCALER
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": metadata(spec, spec.pool_name(role), f"engine-{role}", extra_labels=pod_labels(spec, role),
                             annotations={DEPLOYMENT_MODE_ANNOTATION: STANDARD_MODE,
                                          AUTOSCALER_ANNOTATION: autoscaler}),
        "spec": {
            "predictor": {
                "minReplicas": low,
                "maxReplicas": high,
                "labels": pod_labels(spec, role),
                "model": model,
            }
        },
    }
