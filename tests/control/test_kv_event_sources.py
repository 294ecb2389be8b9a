"""KV-event publishers from the engine (``GET /kv_event_sources``, new in vLLM 0.32; sample in
``tests/golden/vllm-0.32``) for endpoints given without ``#kv=``; a 0.26 engine's 404 leaves them as they were."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from llmd_kserve.control.endpoints import EndpointPool, parse_endpoints
from llmd_kserve.control.kv_sources import KVEventSourceDiscovery, kv_sources_of
from llmd_kserve.stack.procs import free_port
from llmd_kserve.types import Endpoint, EndpointId
from tests.control.engines import lean_call
from tests.wire import golden032_json

SOURCES = golden032_json("kv_event_sources.json")  # {"0": {"endpoint": "tcp://*:15600", "replay_endpoint": ...}}


def test_a_wildcard_bind_address_becomes_the_engine_host():
    assert kv_sources_of("http://10.1.2.3:8000", SOURCES) == ("tcp://10.1.2.3:15600", "tcp://10.1.2.3:15601")
    assert kv_sources_of("http://[fd00::5]:8000", SOURCES) == ("tcp://[fd00::5]:15600", "tcp://[fd00::5]:15601")
    bound = {"0": {**SOURCES["0"], "endpoint": "tcp://10.9.9.9:7000", "replay_endpoint": None}}
    assert kv_sources_of("http://h:8000", bound) == ("tcp://10.9.9.9:7000", None)  # a resolved tcp://*:0


@pytest.mark.parametrize("sources", [
    {},  # a render-only server, or events off
    {"0": {**SOURCES["0"], "publisher": "null"}},
    {"0": {**SOURCES["0"], "endpoint": "inproc://cache"}},
    {"0": {**SOURCES["0"], "endpoint": "tcp://*:0"}},
    {"0": "garbage"}, ["not", "a", "map"],
])
def test_no_reachable_publisher(sources):
    assert kv_sources_of("http://h:8000", sources) is None


def test_data_parallel_ranks_follow_rank_0_and_say_so(caplog):
    ranks = {"1": {**SOURCES["0"], "endpoint": "tcp://*:15601"}, "0": SOURCES["0"]}
    with caplog.at_level(logging.WARNING, "llmd_kserve.control.kv_sources"):
        assert kv_sources_of("http://h:8000", ranks)[0] == "tcp://h:15600"
    assert "2 data-parallel ranks" in caplog.text


@dataclass
class Engine:
    status: int = 200
    asked: int = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.asked += 1
        if self.status != 200:
            return web.json_response(golden032_json("not_found.json"), status=self.status)
        return web.json_response(SOURCES)


@pytest.fixture
async def engines() -> AsyncIterator[list[tuple[Engine, str]]]:
    out, servers = [], []
    for status in (200, 404):  # a 0.32 engine, and one of a version without the endpoint
        engine = Engine(status)
        app = web.Application()
        app.router.add_get("/kv_event_sources", engine.handle)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        out.append((engine, str(server.make_url("")).rstrip("/")))
    yield out
    for server in servers:
        await server.close()


async def test_discovery_fills_in_the_pool_and_keeps_it_across_reloads(engines, caplog):
    (new, new_url), (old, old_url) = engines
    given = "http://127.0.0.1:9#kv=tcp://127.0.0.1:5557"  # an explicit #kv= is never asked about
    pool = EndpointPool(parse_endpoints([new_url, old_url, given]))
    changes: list[tuple[Endpoint, ...]] = []
    pool.subscribe(lambda old_snap, new_snap: changes.append(new_snap))
    wanted = [False]
    with lean_call() as call:
        discovery = KVEventSourceDiscovery(pool, call, lambda: wanted[0])
        await discovery.discover_once()
        assert new.asked == old.asked == 0  # not routing on KV events: nothing asked
        wanted[0] = True
        with caplog.at_level(logging.INFO, "llmd_kserve.control.kv_sources"):
            await discovery.discover_once()
            await discovery.discover_once()  # each engine answered: asked once only
    assert new.asked == old.asked == 1
    assert "vLLM before 0.32" in caplog.text
    by_id = {e.id: e for e in pool.snapshot}
    assert (by_id[EndpointId(new_url)].kv_events, by_id[EndpointId(new_url)].kv_replay) == (
        "tcp://127.0.0.1:15600", "tcp://127.0.0.1:15601")
    assert by_id[EndpointId(old_url)].kv_events is None
    assert by_id[EndpointId("http://127.0.0.1:9")].kv_events == "tcp://127.0.0.1:5557"
    assert len(changes) == 1
    assert not pool.set_endpoints(parse_endpoints([new_url, old_url, given]))  # a reloaded file: nothing changes
    pool.set_endpoints(parse_endpoints([old_url]))  # the engine left: what it reported is forgotten
    pool.set_endpoints(parse_endpoints([new_url, old_url]))
    assert {e.id: e.kv_events for e in pool.snapshot}[EndpointId(new_url)] is None


async def test_an_engine_not_up_yet_is_asked_again():
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    pool = EndpointPool(parse_endpoints([url]))
    engine = Engine()
    app = web.Application()
    app.router.add_get("/kv_event_sources", engine.handle)
    with lean_call() as call:
        discovery = KVEventSourceDiscovery(pool, call, lambda: True)
        await discovery.discover_once()  # connection refused: not settled
        server = TestServer(app, host="127.0.0.1", port=port)
        await server.start_server()
        try:
            await discovery.discover_once()
        finally:
            await server.close()
    assert engine.asked == 1 and pool.snapshot[0].kv_events == "tcp://127.0.0.1:15600"
