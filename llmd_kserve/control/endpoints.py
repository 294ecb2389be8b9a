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

from llmd_kserve.aio import cancel_and_wait
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
        await cancel_and_wait(self._task)
        self._task = None


# --- KV-event publishers the engines report (vLLM >= 0.32) ------------------------------------------------------------
