"""Where each engine publishes its KV events, as the engine reports it (``GET /kv_event_sources``, vLLM >= 0.32)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Mapping
from urllib.parse import urlsplit

from llmd_kserve.aio import cancel_and_wait
from llmd_kserve.control.endpoints import EndpointPool
from llmd_kserve.control.engine_api import EngineCall
from llmd_kserve.types import EndpointId

log = logging.getLogger(__name__)

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
        await cancel_and_wait(self._task)
        self._task = None
