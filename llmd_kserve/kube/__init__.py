"""KServe deployment: typed spec, manifest rendering, apply/wait/teardown, router pod discovery.

Public API::

    DeploymentSpec, load_spec, parse_spec      the typed spec (spec.py)
    render, render_llmisvc, write_tree         Kubernetes objects / the kustomize tree (render.py)
    deploy, status, teardown, apply, KubeApis  apply and inspect on a cluster (deploy.py)
    PodDiscovery, watch_endpoints              the router's pod discovery (discovery.py)
    FakeKubeApi                                a fake API server for tests and offline notebooks (fake.py)

``llmd_kserve.kube.render`` and ``llmd_kserve.kube.deploy`` are the functions here; import from the modules with
``from llmd_kserve.kube.render import …``. The Kubernetes client (the ``kube`` extra) is needed only when rendering
or talking to a cluster, not to import this package.
"""

from llmd_kserve.kube.deploy import (
    DeploymentStatus,
    DeployTimeoutError,
    KubeApis,
    ObjectStatus,
    apply,
    deploy,
    status,
    teardown,
)
from llmd_kserve.kube.discovery import PodDiscovery, watch_endpoints
from llmd_kserve.kube.fake import FakeKubeApi
from llmd_kserve.kube.render import render, render_llmisvc, write_mode, write_tree
from llmd_kserve.kube.spec import DeploymentSpec, load_spec, parse_spec

__all__ = [
    "DeployTimeoutError", "DeploymentSpec", "DeploymentStatus", "FakeKubeApi", "KubeApis", "ObjectStatus",
    "PodDiscovery", "apply", "deploy", "load_spec", "parse_spec", "render", "render_llmisvc", "status", "teardown",
    "watch_endpoints", "write_mode", "write_tree",
]
