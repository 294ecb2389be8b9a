"""The alternative form: KServe's LLMInferenceService (llm-d managed by KServe) plus its InferencePool."""

from __future__ import annotations

import json
from typing import Any

import yaml

from llmd_kserve.errors import ConfigError
from llmd_kserve.kube.k8s import client, env, field_env, metadata, resources, serialize
from llmd_kserve.kube.keda import llmisvc_scaling
from llmd_kserve.kube.router import config_text
from llmd_kserve.kube.runtime import kv_events_config
from llmd_kserve.kube.spec import DeploymentSpec

EPP_PORT = 9002
"""gRPC (Envoy ext_proc) port of the endpoint picker KServe runs for an LLMInferenceService."""
MAIN_CONTAINER = "main"


def workload_selector(spec: DeploymentSpec) -> dict[str, str]:
    """Labels KServe puts on an LLMInferenceService's model-server pods (prefill and decode)."""
    return {"app.kubernetes.io/name": spec.name, "app.kubernetes.io/part-of": "llminferenceservice",
            "kserve.io/component": "workload"}


def pool_name(spec: DeploymentSpec) -> str:
    return f"{spec.name}-pool"


def epp_service_name(spec: DeploymentSpec) -> str:
    """The endpoint-picker Service KServe creates for an LLMInferenceService: ``<name>-epp-service``."""
    return f"{spec.name}-epp-service"


def _vllm_extra_args(spec: DeploymentSpec, extra: tuple[str, ...]) -> str:
    """``VLLM_ADDITIONAL_ARGS``: appended unquoted by KServe's launcher, so every word is free of spaces."""
    words = ["--enable-prefix-caching", f"--block-size={spec.block_size}"]
    if spec.kv_events.enabled:
        words.append("--kv-events-config=" + json.dumps(kv_events_config(spec), separators=(",", ":")))
    words += list(extra)
    return " ".join(words)


def _template(spec: DeploymentSpec, role: str) -> dict[str, Any]:
    pool = spec.pool(role)
    # POD_IP must come before VLLM_ADDITIONAL_ARGS: Kubernetes expands $(VAR) only from earlier entries.
    envs = [field_env("POD_IP", "status.podIP"), field_env("VLLM_NIXL_SIDE_CHANNEL_HOST", "status.podIP"),
            env("VLLM_ADDITIONAL_ARGS", _vllm_extra_args(spec, pool.extra_args))]
    res = pool.resources
    container = client().V1Container(name=MAIN_CONTAINER, image=spec.images.vllm, env=envs,
                                     resources=resources(res.cpu, res.memory, res.gpus))
    return {"containers": [serialize(container)]}


def inference_pool(spec: DeploymentSpec) -> dict[str, Any]:
    """InferencePool (inference.networking.k8s.io/v1): the LLMInferenceService's pods plus KServe's picker."""
    return {
        "apiVersion": "inference.networking.k8s.io/v1",
        "kind": "InferencePool",
        "metadata": metadata(spec, pool_name(spec), "inference-pool"),
        "spec": {
            "selector": {"matchLabels": workload_selector(spec)},
            "targetPorts": [{"number": spec.engine_port}],
            "endpointPickerRef": {"kind": "Service", "name": epp_service_name(spec), "port": {"number": EPP_PORT},
                                  "failureMode": "FailOpen"},
        },
    }


def _replicas(spec: DeploymentSpec, role: str) -> dict[str, Any]:
    """``replicas`` (fixed), or ``scaling`` with KServe's KEDA actuator: the CRD makes them mutually exclusive."""
    if spec.autoscaled:
        return {"scaling": llmisvc_scaling(spec, role)}
    return {"replicas": spec.pool(role).replicas}


def llm_inference_service(spec: DeploymentSpec) -> dict[str, Any]:
    """LLMInferenceService (serving.kserve.io/v1alpha2) with our scheduler config inline and our pool by ref."""
    if spec.simulated:
        raise ConfigError("the LLMInferenceService form runs real vLLM: use mode 'aggregated' or 'pd'", "mode")
    body: dict[str, Any] = {
        "model": {"uri": spec.model.uri, "name": spec.model.served_name},
        **_replicas(spec, "decode"),
        "template": _template(spec, "decode"),
    }
    if spec.disaggregated:
        body["prefill"] = {**_replicas(spec, "prefill"), "template": _template(spec, "prefill")}
    body["router"] = {
        "route": {},
        "gateway": {},
        "scheduler": {
            "config": {"inline": yaml.safe_load(config_text(spec))},
            "pool": {"ref": {"name": pool_name(spec)}},
        },
    }
    return {
        "apiVersion": "serving.kserve.io/v1alpha2",
        "kind": "LLMInferenceService",
        "metadata": metadata(spec, spec.name, "llm-inference-service"),
        "spec": body,
    }
