"""FakeKubeApi: an in-memory fake standing in for a Kubernetes API server (no cluster exists in tests/notebooks).

It implements the CoreV1Api / RbacAuthorizationV1Api / CustomObjectsApi methods that ``kube.deploy`` and
``kube.discovery`` call, and CoordinationV1Api's Leases for ``kube.leader`` (a replace must carry the stored
``resourceVersion``, else 409 Conflict, as the API server's optimistic concurrency has it), answers with the real client's types (V1 models, ``ApiException`` with a JSON ``Status``
body, a streaming watch response the real ``kubernetes.watch.Watch`` parses), and can play a cluster that lacks
CRDs, denies verbs, cannot be reached, or whose controllers mark objects Ready after a few reads.
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Iterable, Iterator
from types import SimpleNamespace
from typing import Any

from llmd_kserve.kube.api import KINDS, KubeApis

_CORE_TYPES = {"config_map": "V1ConfigMap", "service_account": "V1ServiceAccount", "role": "V1Role",
               "role_binding": "V1RoleBinding", "pod": "V1Pod", "lease": "V1Lease"}
_SUFFIX_KIND = {k.suffix: name for name, k in KINDS.items() if k.api != "custom"} | {"pod": "Pod", "lease": "Lease"}
_PLURAL_KIND = {(k.group, k.plural): name for name, k in KINDS.items() if k.api == "custom"}


def _api_exception(status: int, reason: str, body: dict[str, Any] | str | None) -> Exception:
    from kubernetes.client.exceptions import ApiException

    exc = ApiException(status=status, reason=reason)
    exc.body = json.dumps(body) if isinstance(body, dict) else body
    return exc


def _status(code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message, "reason": reason,
            "details": details or {}, "code": code}


def _matches(labels: dict[str, str], selector: str | None) -> bool:
    for term in filter(None, (selector or "").split(",")):
        key, eq, value = term.partition("=")
        if eq and labels.get(key) != value:
            return False
        if not eq and key not in labels:
            return False
    return True


class _WatchResponse:
    """What ``list_*(watch=True, _preload_content=False)`` returns: a urllib3-like streaming response."""

    def __init__(self, lines: Iterable[str]) -> None:
        self._lines = list(lines)

    def stream(self, amt: Any = None, decode_content: bool = False) -> Iterator[bytes]:
        for line in self._lines:
            yield (line.rstrip("\n") + "\n").encode()

    def close(self) -> None:
        pass

    def release_conn(self) -> None:
        pass


class FakeKubeApi:
    """A fake API server (one object serves as core, rbac and custom API). Not a cluster: nothing runs."""

    ALL_CRDS = frozenset(_PLURAL_KIND)

    def __init__(self, *, crds: Iterable[tuple[str, str]] | None = None, namespaces: Iterable[str] | None = None,
                 forbidden: Iterable[tuple[str, str]] = (), ready_after: int | None = 1,
                 unreachable: bool = False) -> None:
        self.crds = set(self.ALL_CRDS if crds is None else crds)
        """(group, plural) pairs installed."""
        self.namespaces = None if namespaces is None else set(namespaces)
        """None: every namespace exists."""
        self.forbidden = set(forbidden)
        """(verb, resource) pairs RBAC denies, e.g. ("create", "inferenceservices")."""
        self.ready_after = ready_after
        """Reads of a Ready-conditioned object before its 'controller' marks it Ready (None: never)."""
        self.unreachable = unreachable
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.calls: list[tuple[str, str, str, str]] = []
        self.watch_batches: list[list[str]] = []
        """Each pod watch call serves the next batch of JSON event lines (then empty streams)."""
        self._reads: dict[tuple[str, str, str], int] = {}
        self._version = 100
        self._lock = threading.Lock()
        self._store_lock = threading.RLock()
        """Writes are atomic (two leader electors in two threads race on one Lease)."""

    def apis(self) -> KubeApis:
        """Core, RBAC and custom objects (Leases too: this object also serves as the CoordinationV1Api)."""
        return KubeApis(core=self, rbac=self, custom=self)

    # --- the server's rules -------------------------------------------------------------------------------------
    def _check(self, verb: str, kind: str, resource: str, ns: str) -> None:
        if self.unreachable:
            from urllib3.exceptions import MaxRetryError, NewConnectionError

            raise MaxRetryError(None, "/api", NewConnectionError(None, "Connection refused"))  # type: ignore[arg-type]
        self.calls.append((verb, kind, ns, ""))
        k = KINDS.get(kind)
        if k is not None and k.api == "custom" and (k.group, k.plural) not in self.crds:
            raise _api_exception(404, "Not Found", "404 page not found")
        if (verb, resource) in self.forbidden:
            raise _api_exception(403, "Forbidden", _status(
                403, "Forbidden", f'{resource} is forbidden: User "system:serviceaccount:test:sa" cannot {verb} '
                f'resource "{resource}" in the namespace "{ns}"', {"kind": resource}))
        if verb == "create" and self.namespaces is not None and ns not in self.namespaces:
            raise _api_exception(404, "Not Found", _status(404, "NotFound", f'namespaces "{ns}" not found',
                                                           {"name": ns, "kind": "namespaces"}))

    def _not_found(self, resource: str, name: str) -> Exception:
        return _api_exception(404, "Not Found", _status(404, "NotFound", f'{resource} "{name}" not found',
                                                        {"name": name, "kind": resource}))

    def _next_version(self) -> str:
        self._version += 1
        return str(self._version)

    # --- generic store ------------------------------------------------------------------------------------------
    def _create(self, kind: str, resource: str, ns: str, body: Any) -> dict[str, Any]:
        with self._store_lock:
            return self._create_locked(kind, resource, ns, body)

    def _create_locked(self, kind: str, resource: str, ns: str, body: Any) -> dict[str, Any]:
        self._check("create", kind, resource, ns)
        obj = copy.deepcopy(body if isinstance(body, dict) else _to_dict(body))
        key = (kind, ns, obj["metadata"]["name"])
        if key in self.objects:
            raise _api_exception(409, "Conflict", _status(409, "AlreadyExists",
                                                          f'{resource} "{key[2]}" already exists'))
        obj["metadata"].update(namespace=ns, resourceVersion=self._next_version(), uid=f"uid-{self._version}")
        self.objects[key] = obj
        self._reads[key] = 0
        return copy.deepcopy(obj)

    def _get(self, kind: str, resource: str, ns: str, name: str) -> dict[str, Any]:
        with self._store_lock:
            return self._get_locked(kind, resource, ns, name)

    def _get_locked(self, kind: str, resource: str, ns: str, name: str) -> dict[str, Any]:
        self._check("get", kind, resource, ns)
        key = (kind, ns, name)
        if key not in self.objects:
            raise self._not_found(resource, name)
        self._reads[key] += 1
        self._reconcile(key)
        return copy.deepcopy(self.objects[key])

    def _replace(self, kind: str, resource: str, ns: str, name: str, body: Any) -> dict[str, Any]:
        with self._store_lock:
            return self._replace_locked(kind, resource, ns, name, body)

    def _replace_locked(self, kind: str, resource: str, ns: str, name: str, body: Any) -> dict[str, Any]:
        self._check("update", kind, resource, ns)
        key = (kind, ns, name)
        if key not in self.objects:
            raise self._not_found(resource, name)
        obj = copy.deepcopy(body if isinstance(body, dict) else _to_dict(body))
        if obj["metadata"].get("resourceVersion") != self.objects[key]["metadata"]["resourceVersion"]:
            raise _api_exception(409, "Conflict", _status(409, "Conflict", "the object has been modified"))
        obj["metadata"]["resourceVersion"] = self._next_version()
        if "status" in self.objects[key]:
            obj.setdefault("status", self.objects[key]["status"])
        self.objects[key] = obj
        return copy.deepcopy(obj)

    def _delete(self, kind: str, resource: str, ns: str, name: str) -> dict[str, Any]:
        self._check("delete", kind, resource, ns)
        if self.objects.pop((kind, ns, name), None) is None:
            raise self._not_found(resource, name)
        return _status(200, "", "deleted") | {"status": "Success"}

    def _list(self, kind: str, resource: str, ns: str, label_selector: str | None) -> list[dict[str, Any]]:
        self._check("list", kind, resource, ns)
        out = []
        for (k, n, name), obj in sorted(self.objects.items()):
            if k == kind and n == ns and _matches(obj["metadata"].get("labels") or {}, label_selector):
                self._reads[(k, n, name)] += 1
                self._reconcile((k, n, name))
                out.append(copy.deepcopy(self.objects[(k, n, name)]))
        return out

    def _reconcile(self, key: tuple[str, str, str]) -> None:
        """Play KServe's controllers: Ready (with a URL) after ``ready_after`` reads."""
        kind, ns, name = key
        k = KINDS.get(kind)
        if not (k and k.conditions) or self.ready_after is None or self._reads[key] < self.ready_after:
            return
        host = f"{name}{'-predictor' if kind == 'InferenceService' else ''}.{ns}.svc.cluster.local"
        self.objects[key]["status"] = {"url": f"http://{host}", "address": {"url": f"http://{host}"},
                                       "conditions": [{"type": "Ready", "status": "True"}]}

    # --- CustomObjectsApi ---------------------------------------------------------------------------------------
    def _custom_kind(self, group: str, plural: str) -> str:
        return _PLURAL_KIND.get((group, plural), plural)

    def create_namespaced_custom_object(self, group, version, namespace, plural, body, **kw):
        return self._create(self._custom_kind(group, plural), plural, namespace, body)

    def get_namespaced_custom_object(self, group, version, namespace, plural, name, **kw):
        return self._get(self._custom_kind(group, plural), plural, namespace, name)

    def replace_namespaced_custom_object(self, group, version, namespace, plural, name, body, **kw):
        return self._replace(self._custom_kind(group, plural), plural, namespace, name, body)

    def delete_namespaced_custom_object(self, group, version, namespace, plural, name, **kw):
        return self._delete(self._custom_kind(group, plural), plural, namespace, name)

    def list_namespaced_custom_object(self, group, version, namespace, plural, label_selector=None, **kw):
        items = self._list(self._custom_kind(group, plural), plural, namespace, label_selector)
        return {"apiVersion": f"{group}/{version}", "kind": "List", "items": items,
                "metadata": {"resourceVersion": str(self._version)}}

    # --- CoreV1Api / RbacAuthorizationV1Api (typed: V1 models in and out) ----------------------------------------
    def __getattr__(self, attr: str) -> Any:
        for verb in ("create", "read", "replace", "delete", "list"):
            prefix = f"{verb}_namespaced_"
            if attr.startswith(prefix) and attr[len(prefix):] in _CORE_TYPES:
                return self._typed(verb, attr[len(prefix):])
        raise AttributeError(attr)

    def _typed(self, verb: str, suffix: str) -> Any:
        kind = _SUFFIX_KIND[suffix]
        resource = suffix.replace("_", "") + "s"
        model = _CORE_TYPES[suffix]

        def call(*args: Any, **kw: Any) -> Any:
            if verb == "create":
                return _to_model(self._create(kind, resource, args[0], args[1]), model)
            if verb == "read":
                return _to_model(self._get(kind, resource, args[1], args[0]), model)
            if verb == "replace":
                return _to_model(self._replace(kind, resource, args[1], args[0], args[2]), model)
            if verb == "delete":
                return self._delete(kind, resource, args[1], args[0])
            items = self._list(kind, resource, args[0], kw.get("label_selector"))
            return _to_model({"items": items, "metadata": {"resourceVersion": str(self._version)}}, model + "List")

        return call

    # --- pods (for discovery) -----------------------------------------------------------------------------------
    def add_pod(self, pod: dict[str, Any]) -> None:
        ns = pod["metadata"].get("namespace", "default")
        self.objects[("Pod", ns, pod["metadata"]["name"])] = copy.deepcopy(pod)
        self._reads[("Pod", ns, pod["metadata"]["name"])] = 0

    def list_namespaced_pod(self, namespace, label_selector=None, watch=False, **kw):
        """:return: V1PodList"""  # the real Watch reads the return type from this docstring line
        if not watch:
            items = self._list("Pod", "pods", namespace, label_selector)
            return _to_model({"items": items, "metadata": {"resourceVersion": str(self._version)}}, "V1PodList")
        self._check("watch", "Pod", "pods", namespace)
        with self._lock:
            batch = self.watch_batches.pop(0) if self.watch_batches else []
            for line in batch:  # the server's state moves with the events it sends (a re-list sees it)
                event = json.loads(line)
                obj = event.get("object") or {}
                if event.get("type") in ("ADDED", "MODIFIED"):
                    self.add_pod(obj)
                elif event.get("type") == "DELETED":
                    meta = obj.get("metadata", {})
                    self.objects.pop(("Pod", meta.get("namespace", "default"), meta.get("name")), None)
        if not batch:
            threading.Event().wait(0.01)  # an idle watch: the real server would block until timeout_seconds
        return _WatchResponse(batch)


_CLIENT = None


def _api_client() -> Any:
    global _CLIENT
    if _CLIENT is None:
        from kubernetes import client

        _CLIENT = client.ApiClient()
    return _CLIENT


def _to_dict(model: Any) -> dict[str, Any]:
    return _api_client().sanitize_for_serialization(model)


def _to_model(data: dict[str, Any], type_name: str) -> Any:
    return _api_client().deserialize(SimpleNamespace(data=json.dumps(data)), type_name)
