"""KEDA autoscaling of the engine pools: a ScaledObject (keda.sh/v1alpha1) per pool with Prometheus triggers on the
router's signals, and the same policy as ``scaling`` of an LLMInferenceService (on vLLM's own metrics there).

Every queue and KV trigger is ``AverageValue`` (desired replicas = the query's total / threshold, so KEDA's
``fallback`` applies); the TTFT trigger is a ``Value`` ratio (desired = current x ratio / threshold). With P/D
``together`` each pool's ``AverageValue`` thresholds are scaled by its share of the spec's replicas, and the ratio
applies to each pool's own count, so both pools move by the same factor.
"""

from __future__ import annotations

from typing import Any

from llmd_kserve.kube.k8s import metadata
from llmd_kserve.kube.spec import DeploymentSpec, ReplicaRange

KEDA_API = "keda.sh/v1alpha1"
NON_SHEDDABLE = 'band!~"-.*"'
"""Bands of priority >= 0: sheddable requests (priority < 0) never add replicas."""


def scaling_range(spec: DeploymentSpec, role: str) -> ReplicaRange:
    a = spec.autoscaling
    return a.prefill if role == "prefill" else a.decode


def fallback_replicas(spec: DeploymentSpec, role: str) -> int:
    """The spec's static replicas of the pool, inside its range."""
    r = scaling_range(spec, role)
    return min(max(spec.pool(role).replicas, r.min), r.max)


def router_selector(spec: DeploymentSpec) -> str:
    a = spec.autoscaling
    return a.selector or f'namespace="{spec.namespace}",pod=~"{spec.router_name}-predictor-.*"'


def _g(num: float) -> str:
    return f"{num:g}"


def _prometheus(spec: DeploymentSpec, name: str, query: str, threshold: float, metric_type: str) -> dict[str, Any]:
    return {"type": "prometheus", "name": name, "metricType": metric_type,
            "metadata": {"serverAddress": spec.autoscaling.prometheus_url, "query": query,
                         "threshold": _g(threshold)}}


def _share(spec: DeploymentSpec, role: str, of: tuple[str, ...]) -> float:
    """With P/D ``together``: (replicas of the pools in ``of``) / (this pool's replicas) in the spec, else 1."""
    if not (spec.disaggregated and spec.autoscaling.pd == "together"):
        return 1.0
    return sum(fallback_replicas(spec, r) for r in of) / fallback_replicas(spec, role)


def queue_triggers(spec: DeploymentSpec, role: str, sel: str | None = None, metric: str = "llmd_router_queue_depth",
                   ) -> list[dict[str, Any]]:
    """Requests waiting in the router (non-sheddable bands), and one trigger per configured band."""
    a, sel = spec.autoscaling, sel or router_selector(spec)
    share = _share(spec, role, spec.roles)
    out = [_prometheus(spec, "queue", f"sum({metric}{{{sel},{NON_SHEDDABLE}}})", a.queue_per_replica * share,
                       "AverageValue")]
    for band, per in sorted(a.band_queue_per_replica.items(), reverse=True):
        out.append(_prometheus(spec, f"queue-band-{band}".replace("--", "-minus-"),
                               f'sum({metric}{{{sel},band="{band}"}})', per * share, "AverageValue"))
    return out


def ttft_trigger(spec: DeploymentSpec) -> dict[str, Any]:
    """Predicted TTFT as a share of the target, from the router's headroom (the worst router replica)."""
    sel = router_selector(spec)
    slo, room = f"llmd_router_ttft_slo_seconds{{{sel}}}", f"llmd_router_ttft_headroom_seconds{{{sel}}}"
    return _prometheus(spec, "ttft", f"max(({slo} - {room}) / {slo})", spec.autoscaling.ttft_target, "Value")


def kv_trigger(spec: DeploymentSpec, role: str) -> dict[str, Any]:
    """KV-cache usage summed over the ready replicas of the KV-holding pool (decode, or the aggregated one)."""
    sel, kv_role = router_selector(spec), ("decode" if spec.disaggregated else "both")
    m = f'{{{sel},role="{kv_role}"}}'
    query = f"avg(llmd_router_kv_usage_ratio{m} * llmd_router_endpoints_ready{m})"
    return _prometheus(spec, "kv-usage", query, spec.autoscaling.kv_usage_target * _share(spec, role, (kv_role,)),
                       "AverageValue")


def triggers(spec: DeploymentSpec, role: str) -> list[dict[str, Any]]:
    """What scales a pool: aggregated, every signal; P/D ``separate``, prefill on its queue and TTFT headroom and
    decode on KV usage; P/D ``together``, every signal on both."""
    queue_ttft = [*queue_triggers(spec, role), ttft_trigger(spec)]
    if not spec.disaggregated or spec.autoscaling.pd == "together":
        return [*queue_ttft, kv_trigger(spec, role)]
    return queue_ttft if role == "prefill" else [kv_trigger(spec, role)]


def hpa_behavior(spec: DeploymentSpec) -> dict[str, Any]:
    b = spec.autoscaling.behavior
    return {
        "scaleUp": {"stabilizationWindowSeconds": b.scale_up_stabilization_s, "selectPolicy": "Max",
                    "policies": [{"type": "Pods", "value": b.scale_up_pods, "periodSeconds": b.scale_up_period_s}]},
        "scaleDown": {"stabilizationWindowSeconds": b.scale_down_stabilization_s, "selectPolicy": "Max",
                      "policies": [{"type": "Pods", "value": b.scale_down_pods,
                                    "periodSeconds": b.scale_down_period_s}]},
    }


def keda_body(spec: DeploymentSpec, role: str, trigger_list: list[dict[str, Any]]) -> dict[str, Any]:
    """The fields a ScaledObject and an LLMInferenceService's ``scaling.keda`` share."""
    a = spec.autoscaling
    return {
        "pollingInterval": a.polling_interval_s,
        "cooldownPeriod": a.cooldown_s,
        "fallback": {"failureThreshold": a.fallback_failures, "replicas": fallback_replicas(spec, role)},
        "advanced": {"horizontalPodAutoscalerConfig": {"behavior": hpa_behavior(spec)}},
        "triggers": trigger_list,
    }


def scaled_object(spec: DeploymentSpec, role: str) -> dict[str, Any]:
    """The ScaledObject of one engine pool: it scales the pool InferenceService's Deployment
    (``<pool>-predictor``, KServe's Standard mode), which KServe leaves to it (``autoscalerClass: external``)."""
    name, r = spec.pool_name(role), scaling_range(spec, role)
    body = keda_body(spec, role, triggers(spec, role))
    return {
        "apiVersion": KEDA_API,
        "kind": "ScaledObject",
        "metadata": metadata(spec, name, f"autoscaler-{role}"),
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": f"{name}-predictor"},
                 "minReplicaCount": r.min, "maxReplicaCount": r.max, **body},
    }


def scaled_objects(spec: DeploymentSpec) -> list[dict[str, Any]]:
    return [scaled_object(spec, role) for role in spec.roles] if spec.autoscaled else []


# --- LLMInferenceService: scaling on vLLM's own metrics (KServe runs llm-d's picker there, not our router) -------
def _vllm_selector(spec: DeploymentSpec, role: str) -> str:
    """The pods of KServe's workload Deployment for ``role``: ``<name>-kserve`` (decode/main) or
    ``<name>-kserve-prefill``, named ``<deployment>-<hash>-<hash>``."""
    deployment = f"{spec.name}-kserve-prefill" if role == "prefill" else f"{spec.name}-kserve"
    return (f'namespace="{spec.namespace}",model_name="{spec.model.served_name}",'
            f'pod=~"{deployment}-[a-z0-9]+-[a-z0-9]+"')


def llmisvc_triggers(spec: DeploymentSpec, role: str) -> list[dict[str, Any]]:
    """vLLM's waiting queue, its measured TTFT p90 against the target, and its KV-cache usage, split by pool as
    :func:`triggers` splits the router's signals."""
    a, sel = spec.autoscaling, _vllm_selector(spec, role)
    slo_s = a.ttft_slo_ms / 1e3
    queue = _prometheus(spec, "queue", f"sum(vllm:num_requests_waiting{{{sel}}})", a.queue_per_replica,
                        "AverageValue")
    ttft = _prometheus(spec, "ttft", "histogram_quantile(0.9, sum by (le) (rate("
                       f"vllm:time_to_first_token_seconds_bucket{{{sel}}}[2m]))) / {_g(slo_s)}", a.ttft_target, "Value")
    kv = _prometheus(spec, "kv-usage", f"sum(vllm:kv_cache_usage_perc{{{sel}}})", a.kv_usage_target, "AverageValue")
    if not spec.disaggregated or a.pd == "together":
        return [queue, ttft, kv]
    return [queue, ttft] if role == "prefill" else [kv]


def llmisvc_scaling(spec: DeploymentSpec, role: str) -> dict[str, Any]:
    """``spec.scaling`` (decode) or ``spec.prefill.scaling`` of an LLMInferenceService (v1alpha2): replicas and
    KServe's direct KEDA actuator (``scaling.keda``), which KServe turns into a ScaledObject."""
    r = scaling_range(spec, role)
    return {"minReplicas": r.min, "maxReplicas": r.max, "keda": keda_body(spec, role, llmisvc_triggers(spec, role))}
