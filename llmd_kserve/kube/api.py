"""Kubernetes API access for deploy/status/teardown: object kinds, lazy API clients, one-line ClusterErrors.

Every call goes through :class:`Ops`, which turns the client's exceptions into what a user can act on: no cluster
configured or reachable, a CRD not installed, RBAC denied, a missing namespace.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from llmd_kserve.errors import ClusterError
from llmd_kserve.kube.k8s import serialize


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


class NotFound(Exception):
    """An object (not its CRD) does not exist."""


class Conflict(Exception):
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
        api = api_client(kubeconfig, context)
        from kubernetes import client

        return cls(client.CoreV1Api(api), client.RbacAuthorizationV1Api(api), client.CustomObjectsApi(api))


def coordination_api(kubeconfig: str | None = None, context: str | None = None) -> Any:
    """A ``CoordinationV1Api`` (Leases, for leader election), configured as :meth:`KubeApis.load` is."""
    from kubernetes import client

    return client.CoordinationV1Api(api_client(kubeconfig, context))


def api_client(kubeconfig: str | None = None, context: str | None = None) -> Any:
    """An ``ApiClient`` from the in-cluster config if running in a pod, else the kubeconfig; ClusterError if none."""
    try:
        from kubernetes import client, config
    except ImportError as exc:
        raise ClusterError("the Kubernetes client is missing: pip install 'llmd-kserve[kube]'") from exc
    try:
        if kubeconfig or context:
            config.load_kube_config(config_file=kubeconfig, context=context, persist_config=False)
        else:
            try:
                config.load_incluster_config()
            except config.ConfigException:
                config.load_kube_config(persist_config=False)  # never rewrite the user's kubeconfig
    except (config.ConfigException, OSError, TypeError) as exc:
        raise ClusterError(f"no Kubernetes cluster configured (no in-cluster service account, no usable "
                           f"kubeconfig): {exc}") from exc
    return client.ApiClient()


# --- low-level operations with error translation ----------------------------------------------------------------
class Ops:
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
                raise NotFound(message) from exc
            if exc.status == 409:
                raise Conflict(message) from exc
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
