"""Apply, inspect and remove a deployment on a cluster: ``deploy(spec)``, ``status(name)``, ``teardown(name)``.

Uses the ``kubernetes`` client directly (CoreV1Api, RbacAuthorizationV1Api, CustomObjectsApi, created lazily from
in-cluster config or a kubeconfig; see :mod:`llmd_kserve.kube.api`), the way ``KServeClient`` does: create, or
replace when the object exists, then poll ``Ready`` conditions with a timeout. Expected cluster problems become
:class:`ClusterError` with one clear line: no cluster configured/reachable, a CRD not installed (KServe, Gateway
API Inference Extension), RBAC denied.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from llmd_kserve.errors import ClusterError
from llmd_kserve.kube.api import KINDS, OPTIONAL_KINDS, TEARDOWN_ORDER, Conflict, KubeApis, NotFound, Ops
from llmd_kserve.kube.spec import INSTANCE_LABEL, MANAGED_BY_LABEL, MANAGER, DeploymentSpec

log = logging.getLogger(__name__)

__all__ = ["DeployTimeoutError", "DeploymentStatus", "KubeApis", "ObjectStatus", "apply", "deploy", "status",
           "teardown", "wait_ready"]


class DeployTimeoutError(ClusterError):
    """Objects were applied but did not all become Ready in time."""


@dataclass(frozen=True, slots=True)
class ObjectStatus:
    kind: str
    name: str
    ready: bool | None
    """None for kinds without a Ready condition (ConfigMap, ServingRuntime…)."""
    message: str = ""
    url: str | None = None


@dataclass(frozen=True, slots=True)
class DeploymentStatus:
    name: str
    namespace: str
    objects: tuple[ObjectStatus, ...]

    @property
    def exists(self) -> bool:
        return bool(self.objects)

    @property
    def ready(self) -> bool:
        return self.exists and all(o.ready is not False for o in self.objects)

    def url(self, kind: str, name: str) -> str | None:
        return next((o.url for o in self.objects if o.kind == kind and o.name == name), None)

    @property
    def router_url(self) -> str | None:
        """The router's own URL: streaming clients call this (KServe's graph router buffers whole responses)."""
        return self.url("InferenceService", f"{self.name}-router")

    @property
    def graph_url(self) -> str | None:
        return self.url("InferenceGraph", self.name)

def _ready(obj: dict[str, Any]) -> tuple[bool, str]:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return cond.get("status") == "True", cond.get("message") or cond.get("reason") or ""
    return False, "no Ready condition yet"


def _url(obj: dict[str, Any]) -> str | None:
    st = obj.get("status") or {}
    return st.get("url") or (st.get("address") or {}).get("url")


# --- public API -------------------------------------------------------------------------------------------------
def apply(objects: Sequence[dict[str, Any]], *, apis: KubeApis | None = None) -> list[str]:
    """Create each object, or replace it when it exists; returns ``Kind/name`` in order. Checks CRDs first."""
    apis = apis or KubeApis.load()
    ops = Ops(apis)
    for kind_name in dict.fromkeys(o["kind"] for o in objects):  # a missing CRD fails before anything is created
        if KINDS[kind_name].api == "custom":
            ns = next(o["metadata"]["namespace"] for o in objects if o["kind"] == kind_name)
            ops.list(kind_name, ns, f"{INSTANCE_LABEL}=__probe__")
    done = []
    for obj in objects:
        kind_name, meta = obj["kind"], obj["metadata"]
        ns, name = meta["namespace"], meta["name"]
        try:
            ops.create(kind_name, ns, obj)
            log.info("created %s/%s", kind_name, name)
        except Conflict:
            current = ops.get(kind_name, ns, name)
            body = json.loads(json.dumps(obj))
            body["metadata"]["resourceVersion"] = current["metadata"].get("resourceVersion")
            ops.replace(kind_name, ns, name, body)
            log.info("replaced %s/%s", kind_name, name)
        done.append(f"{kind_name}/{name}")
    return done


def deploy(spec: DeploymentSpec, *, apis: KubeApis | None = None, form: Literal["isvc", "llmisvc"] = "isvc",
           wait: bool = True, prune: bool = True, timeout: float = 900.0, poll: float = 5.0,
           clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep
           ) -> DeploymentStatus:
    """Render ``spec`` and apply it; with ``wait``, block until every InferenceService/graph is Ready.

    ``form="llmisvc"`` deploys the LLMInferenceService + InferencePool alternative instead (real vLLM only).
    ``prune`` deletes objects of an earlier apply of this deployment that the spec no longer renders (e.g. the
    prefill pool after switching from pd to aggregated).
    Raises :class:`ClusterError` (no cluster, missing CRD, RBAC denied) or :class:`DeployTimeoutError`.
    """
    from llmd_kserve.kube.render import render, render_llmisvc

    apis = apis or KubeApis.load()
    objects = render_llmisvc(spec) if form == "llmisvc" else render(spec)
    applied = set(apply(objects, apis=apis))
    if prune:
        ops = Ops(apis)
        for kind_name in dict.fromkeys(o["kind"] for o in objects):
            for obj in _list_optional(ops, kind_name, spec.namespace, spec.name):
                ref = f"{kind_name}/{obj['metadata']['name']}"
                if ref not in applied:
                    try:
                        ops.delete(kind_name, spec.namespace, obj["metadata"]["name"])
                        log.info("pruned %s", ref)
                    except NotFound:
                        pass
    if not wait:
        return status(spec.name, spec.namespace, apis=apis)
    return wait_ready(spec.name, spec.namespace, apis=apis, timeout=timeout, poll=poll, clock=clock, sleep=sleep)


def wait_ready(name: str, namespace: str, *, apis: KubeApis | None = None, timeout: float = 900.0,
               poll: float = 5.0, clock: Callable[[], float] = time.monotonic,
               sleep: Callable[[float], None] = time.sleep) -> DeploymentStatus:
    apis = apis or KubeApis.load()
    deadline = clock() + timeout
    while True:
        st = status(name, namespace, apis=apis)
        if st.ready:
            return st
        if clock() >= deadline:
            pending = ", ".join(f"{o.kind}/{o.name} ({o.message or 'not ready'})"
                                for o in st.objects if o.ready is False) or "nothing found"
            raise DeployTimeoutError(f"{name!r} not ready after {timeout:g}s: {pending}")
        sleep(poll)


def status(name: str, namespace: str = "llmd", *, apis: KubeApis | None = None) -> DeploymentStatus:
    """Every object of deployment ``name`` with its Ready condition and URL (``exists`` is False if none)."""
    apis = apis or KubeApis.load()
    ops = Ops(apis)
    found: list[ObjectStatus] = []
    for kind_name in KINDS:
        for obj in _list_optional(ops, kind_name, namespace, name):
            ready, message = _ready(obj) if KINDS[kind_name].conditions else (None, "")
            found.append(ObjectStatus(kind_name, obj["metadata"]["name"], ready, message, _url(obj)))
    return DeploymentStatus(name, namespace, tuple(found))


def teardown(name: str, namespace: str = "llmd", *, apis: KubeApis | None = None) -> list[str]:
    """Delete every object labelled with deployment ``name``; returns ``Kind/name`` deleted (already gone: skipped)."""
    apis = apis or KubeApis.load()
    ops = Ops(apis)
    deleted = []
    for kind_name in TEARDOWN_ORDER:
        for obj in _list_optional(ops, kind_name, namespace, name):
            obj_name = obj["metadata"]["name"]
            try:
                ops.delete(kind_name, namespace, obj_name)
            except NotFound:
                continue
            log.info("deleted %s/%s", kind_name, obj_name)
            deleted.append(f"{kind_name}/{obj_name}")
    return deleted


def _selector(name: str) -> str:
    return f"{INSTANCE_LABEL}={name},{MANAGED_BY_LABEL}={MANAGER}"


def _list_optional(ops: Ops, kind_name: str, namespace: str, name: str) -> list[dict[str, Any]]:
    try:
        return ops.list(kind_name, namespace, _selector(name))
    except ClusterError as exc:
        if kind_name in OPTIONAL_KINDS and "is not installed" in str(exc):
            return []
        raise
    except NotFound:
        return []
