"""The engine ServingRuntime: vLLM with prefix caching, KV events and NIXL (or, in sim mode, our simulated engine)."""

from __future__ import annotations

import json
from typing import Any

from llmd_kserve.kube.k8s import client, env, field_env, http_probe, metadata, port, serialize
from llmd_kserve.kube.spec import DeploymentSpec

MODEL_DIR = "/mnt/models"
"""Where KServe's storage initializer puts the weights named by ``storageUri``."""
MODEL_FORMAT = "vLLM"
CONTAINER = "kserve-container"


def kv_events_topic(spec: DeploymentSpec) -> str:
    """``kv@$(POD_IP):8000@<model>``: Kubernetes expands ``$(POD_IP)`` from the downward-API env var."""
    return f"{spec.kv_events.topic_prefix}@$(POD_IP):{spec.engine_port}@{spec.model.served_name}"


def kv_events_config(spec: DeploymentSpec) -> dict[str, Any]:
    return {"enable_kv_cache_events": True, "publisher": "zmq", "endpoint": f"tcp://*:{spec.kv_events.port}",
            "topic": kv_events_topic(spec)}


def kv_transfer_config(spec: DeploymentSpec) -> dict[str, Any]:
    return {"kv_connector": spec.kv_transfer.connector, "kv_role": spec.kv_transfer.role}


def _compact(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


def vllm_command(spec: DeploymentSpec) -> tuple[list[str], list[str]]:
    """(command, args) of a vLLM 0.26 OpenAI server as this deployment runs it."""
    args = [f"--model={MODEL_DIR}", f"--served-model-name={spec.model.served_name}", "--host=0.0.0.0",
            f"--port={spec.engine_port}", "--enable-prefix-caching", f"--block-size={spec.block_size}"]
    if spec.kv_events.enabled:
        args.append(f"--kv-events-config={_compact(kv_events_config(spec))}")
    if spec.disaggregated:
        args.append(f"--kv-transfer-config={_compact(kv_transfer_config(spec))}")
    return ["python3", "-m", "vllm.entrypoints.openai.api_server"], args


def sim_command(spec: DeploymentSpec) -> tuple[list[str], list[str]]:
    """(command, args) of ``llmd-kserve engine`` standing in for vLLM (the pool adds ``--role``)."""
    args = ["engine", "--host=0.0.0.0", f"--port={spec.engine_port}", f"--model={spec.model.served_name}",
            f"--profile={spec.sim_profile}", f"--block-size={spec.block_size}"]
    if spec.kv_events.enabled:
        args += [f"--kv-events-endpoint=tcp://*:{spec.kv_events.port}", f"--kv-events-topic={kv_events_topic(spec)}"]
    return ["llmd-kserve"], args


def engine_container(spec: DeploymentSpec) -> Any:
    c = client()
    command, args = sim_command(spec) if spec.simulated else vllm_command(spec)
    envs = [field_env("POD_IP", "status.podIP"), field_env("POD_NAME", "metadata.name")]
    ports = [port(spec.engine_port, "http")]
    if spec.kv_events.enabled:
        ports.append(port(spec.kv_events.port, "kv-events"))
    if spec.disaggregated and not spec.simulated:
        envs += [field_env("VLLM_NIXL_SIDE_CHANNEL_HOST", "status.podIP"),
                 env("VLLM_NIXL_SIDE_CHANNEL_PORT", str(spec.kv_transfer.side_channel_port))]
        ports.append(port(spec.kv_transfer.side_channel_port, "nixl"))
    # vLLM loads weights, compiles and captures CUDA graphs before /health answers: a long startup allowance.
    startup = 6 if spec.simulated else 120
    return c.V1Container(
        name=CONTAINER,
        image=spec.images.llmd if spec.simulated else spec.images.vllm,
        command=command,
        args=args,
        env=envs,
        ports=ports,
        startup_probe=http_probe("/health", spec.engine_port, period=10, failures=startup),
        readiness_probe=http_probe("/health", spec.engine_port, period=5, failures=3),
        liveness_probe=http_probe("/health", spec.engine_port, period=15, failures=4),
    )


def serving_runtime(spec: DeploymentSpec) -> dict[str, Any]:
    """The ServingRuntime (serving.kserve.io/v1alpha1) both engine pools reference."""
    return {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "ServingRuntime",
        "metadata": metadata(spec, spec.runtime_name, "engine-runtime"),
        "spec": {
            "supportedModelFormats": [{"name": MODEL_FORMAT, "autoSelect": False}],
            "multiModel": False,
            "annotations": {"prometheus.kserve.io/port": str(spec.engine_port), "prometheus.kserve.io/path": "/metrics"},
            "containers": [serialize(engine_container(spec))],
        },
    }
