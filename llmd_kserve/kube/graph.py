"""The InferenceGraph: KServe's entry point, whose root node steps into the router InferenceService."""

from __future__ import annotations

from typing import Any

from llmd_kserve.kube.k8s import DEPLOYMENT_MODE_ANNOTATION, STANDARD_MODE, metadata
from llmd_kserve.kube.spec import DeploymentSpec

GRAPH_PATH = "/v1/chat/completions"
"""The router path the graph forwards to. KServe's graph router buffers whole responses: no streaming here."""


def router_service_url(spec: DeploymentSpec, path: str = "") -> str:
    """In-cluster URL of the router InferenceService's predictor Service (Standard mode: ``<isvc>-predictor``)."""
    return f"http://{spec.router_name}-predictor.{spec.namespace}.svc.cluster.local{path}"


def inference_graph(spec: DeploymentSpec) -> dict[str, Any]:
    """A one-step Sequence graph.

    The step names the router by ``serviceUrl`` rather than ``serviceName`` (the CRD makes them mutually exclusive):
    with ``serviceName`` KServe would call the KServe v1 predict path, while the router speaks the OpenAI API.
    """
    return {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "InferenceGraph",
        "metadata": metadata(spec, spec.name, "graph", annotations={DEPLOYMENT_MODE_ANNOTATION: STANDARD_MODE}),
        "spec": {
            "nodes": {
                "root": {
                    "routerType": "Sequence",
                    "steps": [{"name": "router", "serviceUrl": router_service_url(spec, GRAPH_PATH),
                               "dependency": "Hard"}],
                }
            },
            "minReplicas": 1,
            "maxReplicas": 1,
        },
    }
