"""Router pod discovery: list + watch engine pods by label selector, deliver the ready ones as Endpoints.

A pod is an endpoint while it is Running, Ready, has an IP and is not being deleted. Its role comes from llm-d's
``llm-d.ai/role`` label; its KV events are at ``tcp://<pod IP>:5557``. Every change of the ready set calls
``on_change(list[Endpoint])`` with the whole new list (sorted by id), e.g. the router pool's ``set_endpoints``.

The Kubernetes client is blocking: :meth:`PodDiscovery.run` is a thread body; :func:`watch_endpoints` runs it in a
thread and hands each list to the asyncio loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from llmd_kserve.errors import ClusterError
from llmd_kserve.kube.spec import ROLE_LABEL
from llmd_kserve.types import PROFILE_LABEL, ROLES, Endpoint, EndpointId

log = logging.getLogger(__name__)

OnChange = Callable[[list[Endpoint]], None]
SA_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def in_cluster_namespace(default: str = "default") -> str:
    """The namespace this pod runs in (from its service-account mount), else ``default``."""
    try:
        return SA_NAMESPACE_FILE.read_text().strip() or default
    except OSError:
        return default


_CAMEL = {"pod_ip": "podIP", "deletion_timestamp": "deletionTimestamp", "resource_version": "resourceVersion"}


def _get(obj: Any, *path: str) -> Any:
    """Walk a V1 model (snake_case attributes) or a raw dict (camelCase keys, as in a watch's raw object)."""
    for key in path:
        if obj is None:
            return None
        obj = obj.get(_CAMEL.get(key, key)) if isinstance(obj, dict) else getattr(obj, key, None)
    return obj


def pod_is_ready(pod: Any) -> bool:
    if _get(pod, "metadata", "deletion_timestamp") or _get(pod, "status", "phase") != "Running":
        return False
    if not _get(pod, "status", "pod_ip"):
        return False
    conditions = _get(pod, "status", "conditions") or []
    return any(_get(c, "type") == "Ready" and _get(c, "status") == "True" for c in conditions)


def pod_endpoint(pod: Any, *, port: int = 8000, kv_events_port: int | None = 5557) -> Endpoint | None:
    """The pod as an Endpoint, or None while it is not ready to serve."""
    if not pod_is_ready(pod):
        return None
    ip = _get(pod, "status", "pod_ip")
    host = f"[{ip}]" if ":" in ip else ip
    pod_labels = _get(pod, "metadata", "labels") or {}
    role = pod_labels.get(ROLE_LABEL, "both")
    if role not in ROLES:
        log.warning("pod %s has unknown %s=%r; treating it as 'both'", _get(pod, "metadata", "name"), ROLE_LABEL, role)
        role = "both"
    return Endpoint(id=EndpointId(f"http://{host}:{port}"), role=role,
                    kv_events=f"tcp://{host}:{kv_events_port}" if kv_events_port else None,
                    labels={"pod": str(_get(pod, "metadata", "name") or ""), ROLE_LABEL: role,
                            **({PROFILE_LABEL: pod_labels[PROFILE_LABEL]} if pod_labels.get(PROFILE_LABEL) else {})})


class PodDiscovery:
    """Keeps the ready pods matching ``selector`` in ``namespace``; calls ``on_change`` whenever the set changes."""

    def __init__(self, on_change: OnChange, *, selector: str, namespace: str, core_api: Any = None,
                 port: int = 8000, kv_events_port: int | None = 5557, watch_timeout: int = 300,
                 watch_factory: Callable[[], Any] | None = None, retry_delay: float = 2.0) -> None:
        self._on_change = on_change
        self.selector = selector
        self.namespace = namespace
        self._api = core_api
        self._port = port
        self._kv_port = kv_events_port
        self._watch_timeout = watch_timeout
        self._watch_factory = watch_factory
        self._retry_delay = retry_delay
        self._pods: dict[str, Endpoint] = {}  # pod name -> endpoint (ready pods only)
        self._delivered: list[Endpoint] | None = None
        self._stop = threading.Event()
        self._watch: Any = None

    # --- pure state -------------------------------------------------------------------------------------------
    def endpoints(self) -> list[Endpoint]:
        return sorted(self._pods.values(), key=lambda e: e.id)

    def apply_event(self, kind: str, pod: Any) -> bool:
        """Apply one watch event (ADDED / MODIFIED / DELETED); returns whether the ready set changed."""
        name = _get(pod, "metadata", "name")
        if not name:
            return False
        ep = None if kind == "DELETED" else pod_endpoint(pod, port=self._port, kv_events_port=self._kv_port)
        before = self._pods.get(name)
        if ep is None:
            self._pods.pop(name, None)
        else:
            self._pods[name] = ep
        return before != ep

    def reset(self, pods: Sequence[Any]) -> None:
        """Replace the state from a full list (initial list, or re-list after the watch expired)."""
        self._pods.clear()
        for pod in pods:
            self.apply_event("ADDED", pod)

    def _deliver(self) -> None:
        current = self.endpoints()
        if current != self._delivered:
            self._delivered = current
            log.info("discovered %d ready endpoint(s): %s", len(current), ", ".join(e.id for e in current))
            self._on_change(current)

    # --- the loop -----------------------------------------------------------------------------------------------
    def _core(self) -> Any:
        if self._api is None:
            from llmd_kserve.kube.deploy import KubeApis

            self._api = KubeApis.load().core
        return self._api

    def stop(self) -> None:
        self._stop.set()
        if self._watch is not None:
            self._watch.stop()

    def run(self) -> None:
        """List, then watch from the list's resourceVersion; re-list when the watch expires (410) or fails."""
        from kubernetes import watch as k8s_watch
        from kubernetes.client.exceptions import ApiException

        core = self._core()
        while not self._stop.is_set():
            try:
                listing = core.list_namespaced_pod(self.namespace, label_selector=self.selector)
                self.reset(listing.items)
                self._deliver()
                version = listing.metadata.resource_version
                while not self._stop.is_set():
                    self._watch = (self._watch_factory or k8s_watch.Watch)()
                    for event in self._watch.stream(core.list_namespaced_pod, self.namespace,
                                                    label_selector=self.selector, resource_version=version,
                                                    timeout_seconds=self._watch_timeout):
                        obj = event["object"]
                        version = _get(obj, "metadata", "resource_version") or version
                        if event["type"] in ("ADDED", "MODIFIED", "DELETED") and self.apply_event(event["type"], obj):
                            self._deliver()
                        if self._stop.is_set():
                            break
            except ApiException as exc:
                if exc.status == 410:
                    log.info("pod watch expired (410 Gone); re-listing")
                    continue
                if exc.status == 403:
                    raise ClusterError(f"RBAC denied listing/watching pods in namespace {self.namespace!r}: "
                                       f"the router's ServiceAccount needs get/list/watch on pods") from exc
                log.warning("pod watch failed (%s %s); retrying in %.1fs", exc.status, exc.reason, self._retry_delay)
                self._stop.wait(self._retry_delay)
            except Exception as exc:  # connection reset, API server restart…: keep the last known set, retry
                log.warning("pod watch failed (%s); retrying in %.1fs", exc, self._retry_delay)
                self._stop.wait(self._retry_delay)


async def watch_endpoints(on_change: OnChange, *, selector: str, namespace: str | None = None,
                          core_api: Any = None, **kwargs: Any) -> None:
    """Run discovery in a daemon thread until cancelled; ``on_change`` runs on the calling event loop.

    Raises :class:`ClusterError` if discovery cannot go on (e.g. RBAC denies watching pods).
    """
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def finish(exc: BaseException | None) -> None:
        if not done.done():
            done.set_exception(exc) if exc else done.set_result(None)

    disc = PodDiscovery(lambda eps: loop.call_soon_threadsafe(on_change, eps), selector=selector,
                        namespace=namespace or in_cluster_namespace(), core_api=core_api, **kwargs)

    def body() -> None:
        error: BaseException | None = None
        try:
            disc.run()
        except BaseException as exc:  # handed to the awaiting task
            error = exc
        if not loop.is_closed():
            loop.call_soon_threadsafe(finish, error)

    # A daemon thread: a blocking watch read must never keep the process from exiting.
    threading.Thread(target=body, name="pod-discovery", daemon=True).start()
    try:
        await done
    finally:
        disc.stop()
