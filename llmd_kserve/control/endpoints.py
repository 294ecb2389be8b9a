"""The router's endpoint pool: parsing URL lists and endpoint files, an immutable snapshot, a file watcher, and
the engines' own KV-event addresses (``GET /kv_event_sources``)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import yaml

from llmd_kserve.control.engine_api import EngineCall
from llmd_kserve.errors import ConfigError
from llmd_kserve.types import ROLES, Endpoint, EndpointId

log = logging.getLogger(__name__)

PoolListener = Callable[[tuple[Endpoint, ...], tuple[Endpoint, ...]], None]
"""Called with (old snapshot, new snapshot) after every change of the pool."""


def _endpoint(url: str, role: str = "both", kv_events: str | None = None, labels: Mapping[str, str] | None = None,
              path: str = "", kv_replay: str | None = None) -> Endpoint:
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"endpoint URL must be http(s)://host:port, got {url!r}", path)
    if role not in ROLES:
        raise ConfigError(f"role must be one of {', '.join(ROLES)}, got {role!r}", path)
    try:
        parts.port  # noqa: B018 - raises ValueError on a port outside 0..65535 or not a number
    except ValueError:
        raise ConfigError(f"endpoint URL has a bad port: {url!r}", path) from None
    base = f"{parts.scheme}://{parts.netloc}{parts.path}".rstrip("/")
    return Endpoint(id=EndpointId(base), role=role, kv_events=kv_events or None, labels=dict(labels or {}),
                    kv_replay=kv_replay or None)


def parse_endpoint_url(url: str, path: str = "") -> Endpoint:
    """``http://host:port#role=prefill&kv=tcp://host:5557&replay=tcp://host:5558`` -> Endpoint (fragment optional)."""
    base, _, fragment = url.strip().partition("#")
    opts = dict(parse_qsl(fragment, keep_blank_values=True)) if fragment else {}
    unknown = set(opts) - {"role", "kv", "kv_events", "replay", "kv_replay"}
    if unknown:
        raise ConfigError(f"unknown endpoint option(s) {sorted(unknown)} in {url!r}", path)
    return _endpoint(base, opts.get("role", "both"), opts.get("kv") or opts.get("kv_events"), path=path,
                     kv_replay=opts.get("replay") or opts.get("kv_replay"))


def parse_endpoints(items: Iterable[str | Mapping[str, Any]], path: str = "endpoints") -> tuple[Endpoint, ...]:
    """URL strings and/or ``{url, role, kv_events, labels}`` mappings -> endpoints (duplicates rejected)."""
    out: list[Endpoint] = []
    seen: set[str] = set()
    for i, item in enumerate(items):
        p = f"{path}[{i}]"
        if isinstance(item, str):
            ep = parse_endpoint_url(item, p)
        elif isinstance(item, Mapping):
            if "url" not in item:
                raise ConfigError("missing 'url'", p)
            unknown = set(item) - {"url", "role", "kv_events", "kv", "labels", "kv_replay", "replay"}
            if unknown:
                raise ConfigError(f"unknown field(s) {sorted(unknown)}", p)
            base = parse_endpoint_url(str(item["url"]), f"{p}.url")
            ep = _endpoint(base.id, str(item.get("role", base.role)),
                           item.get("kv_events") or item.get("kv") or base.kv_events, item.get("labels"), p,
                           kv_replay=item.get("kv_replay") or item.get("replay") or base.kv_replay)
        else:
            raise ConfigError(f"expected a URL or a mapping, got {type(item).__name__}", p)
        if ep.id in seen:
            raise ConfigError(f"duplicate endpoint {ep.id}", p)
        seen.add(ep.id)
        out.append(ep)
    return tuple(out)


def load_endpoints_file(path: str | Path) -> tuple[Endpoint, ...]:
    """A YAML/JSON list of endpoints, or a mapping with an ``endpoints`` list.

    An empty file is an error, not an empty pool (a truncate-then-write editor or ``>`` must not drop every
    endpoint for a poll): an empty pool is written explicitly, ``[]`` or ``endpoints: []``.
    """
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read endpoints file: {exc.strerror or exc}", str(path)) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"endpoints file is not UTF-8 text: {exc}", str(path)) from exc
    try:
        data = json.loads(text) if str(path).endswith(".json") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot parse endpoints file: {' '.join(str(exc).split())}", str(path)) from exc
    if isinstance(data, Mapping):
        if "endpoints" not in data:
            raise ConfigError("expected a list of endpoints (or {endpoints: [...]}), got a mapping without "
                              "'endpoints'", str(path))
        data = data["endpoints"]
    if data is None:
        raise ConfigError("endpoints file is empty (write [] or 'endpoints: []' for an empty pool)", str(path))
    if not isinstance(data, list):
        raise ConfigError("expected a list of endpoints (or {endpoints: [...]})", str(path))
    return parse_endpoints(data, path=f"{path}:endpoints")


class EndpointPool:
    """The current endpoints as one immutable tuple, replaced whole; listeners hear about every change.

    KV-event addresses learnt from the engines (:meth:`set_discovered`) fill in those of endpoints configured
    without one, now and whenever the endpoint list is set again (a reloaded file keeps them).
    """

    def __init__(self, endpoints: Sequence[Endpoint] = ()) -> None:
        self._configured: tuple[Endpoint, ...] = tuple(endpoints)
        self._snapshot: tuple[Endpoint, ...] = self._configured
        self._listeners: list[PoolListener] = []
        self._discovered: dict[EndpointId, tuple[str, str | None]] = {}

    @property
    def snapshot(self) -> tuple[Endpoint, ...]:
        return self._snapshot

    def subscribe(self, listener: PoolListener) -> None:
        self._listeners.append(listener)

    def set_discovered(self, endpoint_id: EndpointId, kv_events: str, kv_replay: str | None) -> bool:
        """The KV-event publisher (and replay) address an engine reported; returns whether the pool changed."""
        self._discovered[endpoint_id] = (kv_events, kv_replay)
        return self.set_endpoints(self._configured)

    def _with_discovered(self, endpoint: Endpoint) -> Endpoint:
        found = self._discovered.get(endpoint.id) if endpoint.kv_events is None else None
        if found is None:
            return endpoint
        return replace(endpoint, kv_events=found[0], kv_replay=endpoint.kv_replay or found[1])

    def set_endpoints(self, endpoints: Sequence[Endpoint]) -> bool:
        """Replace the pool (e.g. from Kubernetes discovery); returns whether anything changed."""
        self._configured = tuple(endpoints)
        ids = {e.id for e in self._configured}
        for gone in [eid for eid in self._discovered if eid not in ids]:
            del self._discovered[gone]  # a new engine at that URL is asked again
        new = tuple(map(self._with_discovered, self._configured)) if self._discovered else self._configured
        old = self._snapshot
        if new == old:
            return False
        self._snapshot = new
        log.info("endpoints changed: %d -> %d (%s)", len(old), len(new), ", ".join(e.id for e in new))
        for listener in self._listeners:
            try:
                listener(old, new)
            except Exception:  # a listener must not stop the others
                log.exception("endpoint pool listener failed")
        return True


class EndpointsFileWatcher:
    """Polls an endpoints file's mtime/size and loads it into the pool when it changes; bad files are logged."""

    def __init__(self, path: str | Path, pool: EndpointPool, interval: float = 1.0) -> None:
        self.path = Path(path)
        self.pool = pool
        self.interval = interval
        self._stamp: tuple[int, int] | None = None
        self._task: asyncio.Task[None] | None = None

    def _stat(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size

    def load_now(self) -> bool:
        """Load the file if it changed since the last load; returns whether the pool changed."""
        stamp = self._stat()
        if stamp is None or stamp == self._stamp:
            return False
        self._stamp = stamp
        return self.pool.set_endpoints(load_endpoints_file(self.path))

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                self.load_now()
            except Exception as exc:  # keep the old pool on a bad edit
                log.error("ignoring endpoints file %s, keeping the %d endpoints in use: %s", self.path,
                          len(self.pool.snapshot), exc)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="endpoints-file-watcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None


# --- KV-event publishers the engines report (vLLM >= 0.32) ------------------------------------------------------------

_WILDCARD_HOSTS = frozenset({"*", "0.0.0.0", "::", "[::]", ""})


def _reachable(address: str | None, engine_host: str) -> str | None:
    """A publisher's ZMQ address as the router dials it: a wildcard bind host (``tcp://*:5557``) becomes the
    engine's host; ``inproc://`` cannot be reached from another process (None)."""
    if not isinstance(address, str) or not address or address.startswith("inproc://"):
        return None
    if not address.startswith("tcp://"):
        return address  # ipc:// reaches a publisher on the same host
    hostport = address[len("tcp://"):]
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit() or port == "0":
        return None
    if host in _WILDCARD_HOSTS:
        host = f"[{engine_host}]" if ":" in engine_host else engine_host
    return f"tcp://{host}:{port}"


def kv_sources_of(endpoint_id: str, sources: object) -> tuple[str, str | None] | None:
    """(publisher, replay) address of data-parallel rank 0 in a ``GET /kv_event_sources`` answer (a map rank ->
    ``KVEventsConfig``), reachable from the router; None when the engine publishes no KV events."""
    if not isinstance(sources, Mapping) or not sources:
        return None
    ranks = sorted(sources, key=lambda r: int(r) if str(r).isdigit() else 1 << 30)
    config = sources[ranks[0]]
    if not isinstance(config, Mapping) or config.get("publisher") != "zmq":
        return None
    host = urlsplit(endpoint_id).hostname or "127.0.0.1"
    events = _reachable(config.get("endpoint"), host)
    if events is None:
        return None
    if len(ranks) > 1:
        log.warning("%s serves %d data-parallel ranks; the router follows the KV events of rank %s only (list each "
                    "rank as its own endpoint to route on all of them)", endpoint_id, len(ranks), ranks[0])
    return events, _reachable(config.get("replay_endpoint"), host)


class KVEventSourceDiscovery:
    """Asks every endpoint configured without a KV-event address for its publisher (``GET /kv_event_sources``,
    vLLM >= 0.32) while ``wanted()`` (the scheduler routes on the KV-event index), and puts what it reports into the
    pool. An engine that answers 404 (an older vLLM), publishes no events or answers garbage is said once and not
    asked again; one that cannot be reached yet is asked again every ``retry_s`` seconds.
    """

    def __init__(self, pool: EndpointPool, call: EngineCall, wanted: Callable[[], bool],
                 retry_s: float = 2.0, timeout_s: float = 2.0) -> None:
        self.pool = pool
        self._call = call
        self._wanted = wanted
        self.retry_s = retry_s
        self._timeout = timeout_s
        self._settled: set[EndpointId] = set()
        self._task: asyncio.Task[None] | None = None

    async def discover_once(self) -> None:
        """Ask every endpoint not asked successfully yet, concurrently."""
        snapshot = self.pool.snapshot
        self._settled &= {e.id for e in snapshot}
        todo = [e for e in snapshot if e.kv_events is None and e.id not in self._settled]
        if todo and self._wanted():
            await asyncio.gather(*(self._ask(e.id) for e in todo))

    async def _ask(self, eid: EndpointId) -> None:
        try:
            status, raw = await self._call(eid, "/kv_event_sources", None, self._timeout)
        except (OSError, TimeoutError, ValueError) as exc:  # not up yet: ask again next round
            log.debug("asking %s for its KV-event sources failed: %s", eid, exc)
            return
        try:
            data = json.loads(raw) if status == 200 else None
        except ValueError:
            data = None
        self._settled.add(eid)
        if status == 404:
            log.info("%s has no /kv_event_sources (vLLM before 0.32): add #kv=tcp://host:port to its URL to route on "
                     "its KV events", eid)
            return
        found = kv_sources_of(eid, data) if status == 200 else None
        if found is None:
            log.info("%s reports no reachable KV-event publisher (HTTP %s): start vLLM with --kv-events-config "
                     "(publisher zmq) to route on its KV events", eid, status)
            return
        log.info("KV events of %s: %s (replay %s), as the engine reports", eid, found[0], found[1] or "none")
        self.pool.set_discovered(eid, *found)

    async def _run(self) -> None:
        while True:
            try:
                await self.discover_once()
            except Exception:  # never let one bad answer end discovery
                log.exception("KV-event source discovery failed")
            await asyncio.sleep(self.retry_s)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="kv-event-source-discovery")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
