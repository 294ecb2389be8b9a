"""Apply, inspect and remove a deployment on a cluster: ``deploy(spec)``, ``status(name)``, ``teardown(name)``.

Uses the ``kubernetes`` client directly (CoreV1Api, RbacAuthorizationV1Api, CustomObjectsApi, created lazily from
in-cluster config or a kubeconfig), the way ``KServeClient`` does: create, or replace when the object exists, then
poll ``Ready`` conditions with a timeout. Expected cluster problems become :class:`ClusterError` with one clear line:
no cluster configured/reachable, a CRD not installed (KServe, Gateway API Inference Extension), RBAC denied.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from llmd_kserve.errors import ClusterError
from llmd_kserve.kube.k8s import serialize
from llmd_kserve.kube.spec import INSTANCE_LABEL, MANAGED_BY_LABEL, MANAGER, DeploymentSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Kind:
    """How to reach one object kind: a typed core/RBAC API (``suffix``) or a custom resource (group/version/plural)."""

    api: Literal["core", "rbac", "custom"]
    suffix: str = ""
    group: str = ""
    version: str = ""
    plural: str = ""
    conditions: bool = False
    """Whether the kind reports a ``Ready`` condition worth waiting for."""

    @property
    def resource(self) -> str:
        return f"{self.plural}.{self.group}" if self.api == "custom" else self.suffix.replace("_", "") + "s"


KINDS: dict[str, Kind] = {
    "ConfigMap": Kind("core", "config_map"),
    "ServiceAccount": Kind("core", "service_account"),
    "Role": Kind("rbac", "role"),
    "RoleBinding": Kind("rbac", "role_binding"),
    "ServingRuntime": Kind("custom", group="serving.kserve.io", version="v1alpha1", plural="servingruntimes"),
    "InferenceService": Kind("custom", group="serving.kserve.io", version="v1beta1", plural="inferenceservices",
                             conditions=True),
    "InferenceGraph": Kind("custom", group="serving.kserve.io", version="v1alpha1", plural="inferencegraphs",
                           conditions=True),
    "LLMInferenceService": Kind("custom", group="serving.kserve.io", version="v1alpha2",
                                plural="llminferenceservices", conditions=True),
    "InferencePool": Kind("custom", group="inference.networking.k8s.io", version="v1", plural="inferencepools"),
}
TEARDOWN_ORDER = ("InferenceGraph", "LLMInferenceService", "InferenceService", "InferencePool", "ServingRuntime",
                  "RoleBinding", "Role", "ServiceAccount", "ConfigMap")
OPTIONAL_KINDS = frozenset({"LLMInferenceService", "InferencePool"})
"""CRDs a cluster may lack without that being an error for status/teardown."""


class DeployTimeoutError(ClusterError):
    """Objects were applied but did not all become Ready in time."""


class _NotFound(Exception):
    """An object (not its CRD) does not exist."""


class _Conflict(Exception):
    """The object already exists (create answered 409)."""


@dataclass(frozen=True, slots=True)
class KubeApis:
    """The three API objects deploy/status/teardown use (a :class:`~llmd_kserve.kube.fake.FakeKubeApi` in tests)."""

    core: Any
    rbac: Any
    custom: Any

    @classmethod
    def load(cls, kubeconfig: str | None = None, context: str | None = None) -> KubeApis:
        """In-cluster config if running in a pod, else the kubeconfig (``$KUBECONFIG`` / ``~/.kube/config``)."""
        try:
            from kubernetes import client, config
        except ImportError as exc:
            raise ClusterError("the Kubernetes client is missing: pip install 'llmd-kserve[kube]'") from exc
        try:
            if kubeconfig or context:
                config.load_kube_config(config_file=kubeconfig, context=context)
            else:
                try:
                    config.load_incluster_config()
                except config.ConfigException:
                    config.load_kube_config()
        except (config.ConfigException, OSError, TypeError) as exc:
            raise ClusterError(f"no Kubernetes cluster configured (no in-cluster service account, no usable "
                               f"kubeconfig): {exc}") from exc
        api = client.ApiClient()
        return cls(client.CoreV1Api(api), client.RbacAuthorizationV1Api(api), client.CustomObjectsApi(api))


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


# --- low-level operations with error translation ----------------------------------------------------------------
class _Ops:
    def __init__(self, apis: KubeApis) -> None:
        self.apis = apis

    def _call(self, verb: str, kind_name: str, namespace: str, fn: Callable[[], Any]) -> Any:
        from kubernetes.client.exceptions import ApiException

        kind = KINDS[kind_name]
        try:
            return fn()
        except ApiException as exc:
            body = _status_body(exc)
            message = body.get("message") or exc.reason or ""
            if exc.status == 403:
                raise ClusterError(f"RBAC denied: cannot {verb} {kind.resource} in namespace {namespace!r} "
                                   f"({message})") from exc
            if exc.status == 404:
                if (body.get("details") or {}).get("kind") == "namespaces":
                    raise ClusterError(f"namespace {namespace!r} does not exist (kubectl create namespace "
                                       f"{namespace})") from exc
                if kind.api == "custom" and (not body or "could not find the requested resource" in message):
                    raise ClusterError(f"CRD {kind.resource} ({kind_name}) is not installed in this cluster: "
                                       f"install {_installer(kind)} first") from exc
                raise _NotFound(message) from exc
            if exc.status == 409:
                raise _Conflict(message) from exc
            raise ClusterError(f"{verb} {kind_name} in {namespace!r} failed: {exc.status} {message}") from exc
        except (OSError, _urllib3_errors()) as exc:
            raise ClusterError(f"cannot reach the Kubernetes API server ({type(exc).__name__}: {exc})") from exc

    def _typed(self, kind: Kind) -> Any:
        return self.apis.core if kind.api == "core" else self.apis.rbac

    def create(self, kind_name: str, ns: str, body: dict[str, Any]) -> Any:
        k = KINDS[kind_name]
        if k.api == "custom":
            return self._call("create", kind_name, ns, lambda: self.apis.custom.create_namespaced_custom_object(
                k.group, k.version, ns, k.plural, body))
        return self._call("create", kind_name, ns,
                          lambda: getattr(self._typed(k), f"create_namespaced_{k.suffix}")(ns, body))

    def get(self, kind_name: str, ns: str, name: str) -> dict[str, Any]:
        k = KINDS[kind_name]
        if k.api == "custom":
            return self._call("get", kind_name, ns, lambda: self.apis.custom.get_namespaced_custom_object(
                k.group, k.version, ns, k.plural, name))
        return _as_dict(self._call("get", kind_name, ns,
                                   lambda: getattr(self._typed(k), f"read_namespaced_{k.suffix}")(name, ns)))

    def replace(self, kind_name: str, ns: str, name: str, body: dict[str, Any]) -> Any:
        k = KINDS[kind_name]
        if k.api == "custom":
            return self._call("update", kind_name, ns, lambda: self.apis.custom.replace_namespaced_custom_object(
                k.group, k.version, ns, k.plural, name, body))
        return self._call("update", kind_name, ns,
                          lambda: getattr(self._typed(k), f"replace_namespaced_{k.suffix}")(name, ns, body))

    def delete(self, kind_name: str, ns: str, name: str) -> None:
        k = KINDS[kind_name]
        if k.api == "custom":
            self._call("delete", kind_name, ns, lambda: self.apis.custom.delete_namespaced_custom_object(
                k.group, k.version, ns, k.plural, name))
        else:
            self._call("delete", kind_name, ns,
                       lambda: getattr(self._typed(k), f"delete_namespaced_{k.suffix}")(name, ns))

    def list(self, kind_name: str, ns: str, selector: str) -> list[dict[str, Any]]:
        k = KINDS[kind_name]
        if k.api == "custom":
            out = self._call("list", kind_name, ns, lambda: self.apis.custom.list_namespaced_custom_object(
                k.group, k.version, ns, k.plural, label_selector=selector))
            return list(out.get("items", []))
        out = self._call("list", kind_name, ns, lambda: getattr(self._typed(k), f"list_namespaced_{k.suffix}")(
            ns, label_selector=selector))
        return [_as_dict(o) for o in (out.items or [])]


def _status_body(exc: Any) -> dict[str, Any]:
    try:
        body = json.loads(exc.body) if exc.body else {}
    except (TypeError, ValueError):
        return {}
    return body if isinstance(body, dict) else {}


def _urllib3_errors() -> type[Exception] | tuple[type[Exception], ...]:
    try:
        from urllib3.exceptions import HTTPError
    except ImportError:  # pragma: no cover
        return ()
    return HTTPError


def _installer(kind: Kind) -> str:
    return "the Gateway API Inference Extension CRDs" if "inference.networking" in kind.group else "KServe"


def _as_dict(obj: Any) -> dict[str, Any]:
    return obj if isinstance(obj, dict) else serialize(obj)


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
    ops = _Ops(apis)
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
        except _Conflict:
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
        ops = _Ops(apis)
        for kind_name in dict.fromkeys(o["kind"] for o in objects):
            for obj in _list_optional(ops, kind_name, spec.namespace, spec.name):
                ref = f"{kind_name}/{obj['metadata']['name']}"
                if ref not in applied:
                    try:
                        ops.delete(kind_name, spec.namespace, obj["metadata"]["name"])
                        log.info("pruned %s", ref)
                    except _NotFound:
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
    ops = _Ops(apis)
    found: list[ObjectStatus] = []
    for kind_name in KINDS:
        for obj in _list_optional(ops, kind_name, namespace, name):
            ready, message = _ready(obj) if KINDS[kind_name].conditions else (None, "")
            found.append(ObjectStatus(kind_name, obj["metadata"]["name"], ready, message, _url(obj)))
    return DeploymentStatus(name, namespace, tuple(found))


def teardown(name: str, namespace: str = "llmd", *, apis: KubeApis | None = None) -> list[str]:
    """Delete every object labelled with deployment ``name``; returns ``Kind/name`` deleted (already gone: skipped)."""
    apis = apis or KubeApis.load()
    ops = _Ops(apis)
    deleted = []
    for kind_name in TEARDOWN_ORDER:
        for obj in _list_optional(ops, kind_name, namespace, name):
            obj_name = obj["metadata"]["name"]
            try:
                ops.delete(kind_name, namespace, obj_name)
            except _NotFound:
                continue
            log.info("deleted %s/%s", kind_name, obj_name)
            deleted.append(f"{kind_name}/{obj_name}")
    return deleted


def _selector(name: str) -> str:
    return f"{INSTANCE_LABEL}={name},{MANAGED_BY_LABEL}={MANAGER}"


def _list_optional(ops: _Ops, kind_name: str, namespace: str, name: str) -> list[dict[str, Any]]:
    try:
        return ops.list(kind_name, namespace, _selector(name))
    except ClusterError as exc:
        if kind_name in OPTIONAL_KINDS and "is not installed" in str(exc):
            return []
        raise
    except _NotFound:
        return []
