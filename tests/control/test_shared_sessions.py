"""Sessions shared through a real ``redis-server`` (``--state-url`` + ``--shared-sessions``): two routers over the
same simulated engines; a session placed by router A continues on its home when its next turn reaches router B;
a ``previous_response_id`` learnt by A resolves through B; with Redis down, turns are placed fresh (fail open) and
the failures are counted. The config picks at random outside a session's home, so without sharing router B would
place a session it has not seen anywhere (the control case shows it does)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from llmd_kserve.control.settings import RouterSettings
from llmd_kserve.engine_sim.server import running_engine
from llmd_kserve.errors import ConfigError
from llmd_kserve.router.app import RunningRouter, running_router
from llmd_kserve.state_store import PAUSE_S
from tests.governance.redis_server import RedisServer, redis_server  # noqa: F401  (fixture)

MODEL = "llama-8b-shape"
CONFIG = """\
apiVersion: inference.networking.x-k8s.io/v1alpha1
kind: EndpointPickerConfig
plugins:
- type: single-profile-handler
- type: session-affinity-filter
- type: random-picker
schedulingProfiles:
- name: default
  plugins:
  - pluginRef: session-affinity-filter
  - pluginRef: random-picker
"""
SESSIONS = 8


@contextlib.asynccontextmanager
async def routers(tmp_path: Path, redis: RedisServer, *, shared: tuple[bool, bool] = (True, True),
                  ) -> AsyncIterator[tuple[RunningRouter, RunningRouter, aiohttp.ClientSession, list[str]]]:
    config = tmp_path / "sessions-random.yaml"
    config.write_text(CONFIG)
    async with contextlib.AsyncExitStack() as st:
        engines = [await st.enter_async_context(running_engine(port=0, model=MODEL, time_scale=0.02, seed=i))
                   for i in range(3)]
        urls = [e.url for e in engines]
        a, b = [await st.enter_async_context(running_router(
            endpoints=urls, config=str(config), scrape_interval=0.05, seed=seed, state_url=redis.url,
            shared_sessions=on)) for seed, on in zip((1, 2), shared, strict=True)]
        yield a, b, await st.enter_async_context(aiohttp.ClientSession()), urls


async def chat(http: aiohttp.ClientSession, url: str, session: str, text: str) -> str:
    async with http.post(f"{url}/v1/chat/completions", headers={"x-session-id": session}, json={
            "model": MODEL, "max_tokens": 2, "messages": [{"role": "user", "content": text}]}) as r:
        assert r.status == 200, await r.text()
        await r.read()
        return r.headers["x-llmd-endpoint"]


async def turns_a_then_b(a: RunningRouter, b: RunningRouter, http: aiohttp.ClientSession) -> list[tuple[str, str]]:
    """Per session: (the endpoint of turn 1 via A, of turn 2 via B); the turns share no text."""
    out = []
    for i in range(SESSIONS):
        first = await chat(http, a.url, f"s{i}", f"turn one of session {i}")
        out.append((first, await chat(http, b.url, f"s{i}", f"an unrelated second turn {i * 7}")))
    return out


async def metric(http: aiohttp.ClientSession, url: str, name: str) -> float:
    async with http.get(f"{url}/metrics") as r:
        text = await r.text()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


async def test_a_session_placed_by_router_a_continues_on_its_home_through_router_b(tmp_path, redis_server):  # noqa: F811
    async with routers(tmp_path, redis_server) as (a, b, http, urls):
        pairs = await turns_a_then_b(a, b, http)
        assert all(first == second for first, second in pairs), pairs
        assert len({first for first, _ in pairs}) > 1  # the sessions were spread: the homes were not all one
        assert await metric(http, b.url, "llmd_router_state_errors_total") == 0


async def test_without_shared_sessions_router_b_places_them_afresh(tmp_path, redis_server):  # noqa: F811
    async with routers(tmp_path, redis_server, shared=(False, False)) as (a, b, http, _urls):
        pairs = await turns_a_then_b(a, b, http)
        assert any(first != second for first, second in pairs), pairs  # the control: the test above can fail


async def test_a_previous_response_id_learnt_by_router_a_resolves_through_router_b(tmp_path, redis_server):  # noqa: F811
    async with routers(tmp_path, redis_server) as (a, b, http, _urls):
        for i in range(4):
            async with http.post(f"{a.url}/v1/responses", json={
                    "model": MODEL, "input": f"Plan trip {i}.", "max_output_tokens": 4}) as r:
                first = await r.json()
                assert r.status == 200, first
                home = r.headers["x-llmd-endpoint"]
            async with http.post(f"{b.url}/v1/responses", json={  # the engines answer 404 without the state
                    "model": MODEL, "input": "And then?", "max_output_tokens": 4,
                    "previous_response_id": first["id"]}) as r:
                nxt = await r.json()
                assert r.status == 200, nxt
                assert r.headers["x-llmd-endpoint"] == home and nxt["previous_response_id"] == first["id"]


async def test_with_redis_down_turns_are_placed_fresh_and_the_failures_counted(tmp_path, redis_server):  # noqa: F811
    async with routers(tmp_path, redis_server) as (a, b, http, urls):
        home = await chat(http, a.url, "before", "placed while Redis is up")
        redis_server.stop()
        for i in range(3):  # fail open: answered, placed by B's own table
            assert await chat(http, b.url, f"down{i}", "hello") in urls
        assert await metric(http, b.url, 'llmd_router_state_errors_total{op="session_get"}') >= 1
        redis_server.start()  # back, with its data (append-only file): sharing resumes
        await asyncio.sleep(PAUSE_S + 0.2)  # after a failure the store fails calls at once for PAUSE_S
        assert await chat(http, b.url, "before", "its first turn through B") == home


def test_shared_sessions_need_a_state_url():
    with pytest.raises(ConfigError, match="shared_sessions"):
        RouterSettings(shared_sessions=True)
