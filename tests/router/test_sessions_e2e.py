"""Sessions end to end: the router (``sessions`` config) in front of simulated engines over real HTTP: turns stay on
their session's home, move once when it saturates and stay, sub-agents spread, turn priority under flow control."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import yaml

from llmd_kserve.engine_sim.server import running_engine
from llmd_kserve.router.app import RunningRouter, running_router

MODEL = "llama-8b-shape"
SHIPPED = Path(__file__).resolve().parents[2] / "llmd_kserve" / "config" / "shipped"


@contextlib.asynccontextmanager
async def stack(n: int, config: str | Path = "sessions", num_blocks: int | None = None, time_scale: float = 0.05,
                **router_kw) -> AsyncIterator[tuple[list, RunningRouter, aiohttp.ClientSession]]:
    async with contextlib.AsyncExitStack() as st:
        engines = [await st.enter_async_context(running_engine(port=0, model=MODEL, time_scale=time_scale, seed=i,
                                                               num_blocks=num_blocks)) for i in range(n)]
        router = await st.enter_async_context(running_router(endpoints=[e.url for e in engines], config=str(config),
                                                             scrape_interval=0.02, **router_kw))
        http = await st.enter_async_context(aiohttp.ClientSession())
        for _ in range(200):
            health = await (await http.get(f"{router.url}/health")).json()
            if health["healthy"] == n:
                break
            await asyncio.sleep(0.02)
        yield engines, router, http


def words(n: int, rng: random.Random) -> str:
    return " ".join(f"w{rng.randrange(10**6)}" for _ in range(n))


async def turn(http: aiohttp.ClientSession, router: RunningRouter, prompt: str, headers: dict | None = None,
               max_tokens: int = 4, **body) -> str:
    """One chat request through the router; the endpoint that served it."""
    async with http.post(f"{router.url}/v1/chat/completions", headers=headers or {}, json={
            "model": MODEL, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
            **body}) as r:
        assert r.status == 200, await r.text()
        await r.read()
        return r.headers["x-llmd-endpoint"]


def moves(router: RunningRouter) -> float:
    text = router.state.metrics.render()[0].decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("llmd_router_session_moves_total{"))


async def test_turns_stay_on_their_session_home_by_header_user_or_metadata() -> None:
    rng = random.Random(1)
    async with stack(3) as (_engines, router, http):
        for how in ({"headers": {"x-session-id": "alpha"}}, {"user": "bob"}, {"metadata": {"session_id": "s-9"}}):
            homes = {await turn(http, router, words(60, rng), **how) for _ in range(6)}  # unrelated prompts
            assert len(homes) == 1, (how, homes)
        r = await http.get(f"{router.url}/debug/sessions", params={"session": "alpha"})
        info = await r.json()
        assert r.status == 200 and info["turns"] == 6 and info["moves"] == 0
        missing = await http.get(f"{router.url}/debug/sessions", params={"session": "nobody"})
        assert missing.status == 404 and (await missing.json())["error"]["param"] == "session"
        text = router.state.metrics.render()[0].decode()
        assert "llmd_router_sessions_live 3.0" in text
        # without a session the same unrelated prompts spread (nothing keeps them together)
        spread = {await turn(http, router, words(60, rng)) for _ in range(12)}
        assert len(spread) > 1


async def _load(http: aiohttp.ClientSession, url: str, n: int, rng: random.Random) -> list[asyncio.Task]:
    """``n`` long requests straight to one engine (not through the router), running until cancelled."""
    async def one() -> None:
        async with http.post(f"{url}/v1/completions", json={"model": MODEL, "prompt": words(800, rng),
                                                            "max_tokens": 2000, "stream": True}) as r:
            assert r.status == 200, await r.text()
            async for _ in r.content:
                pass
    return [asyncio.create_task(one()) for _ in range(n)]


async def _kv_at_least(router: RunningRouter, url: str, usage: float) -> None:
    for _ in range(500):
        if router.state.scraper.get(url).kv_usage >= usage:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{url} never reached KV usage {usage}")


async def test_a_session_moves_once_when_its_home_saturates_then_stays(tmp_path: Path) -> None:
    cfg = yaml.safe_load((SHIPPED / "sessions.yaml").read_text())
    for p in cfg["plugins"]:
        if p["type"] == "session-affinity-filter":
            p["parameters"].update(maxKvUsage=0.5, stayS=60)
    path = tmp_path / "sessions.yaml"
    path.write_text(yaml.safe_dump(cfg))
    rng = random.Random(2)
    h = {"x-session-id": "agent-1"}
    async with stack(2, path, num_blocks=400, time_scale=0.2) as (engines, router, http):
        home = await turn(http, router, words(40, rng), h)
        other = next(e.url for e in engines if e.url != home)
        assert await turn(http, router, words(40, rng), h) == home and moves(router) == 0
        load = await _load(http, home, 2, rng)  # fills the home's KV cache: saturated
        try:
            await _kv_at_least(router, home, 0.5)
            assert await turn(http, router, words(40, rng), h) == other
            assert moves(router) == 1
            load += await _load(http, other, 2, rng)  # now the new home is full too: it stays (no ping-pong)
            await _kv_at_least(router, other, 0.5)
            for _ in range(3):
                assert await turn(http, router, words(40, rng), h) == other
        finally:
            for t in load:
                t.cancel()
            await asyncio.gather(*load, return_exceptions=True)
        assert await turn(http, router, words(40, rng), h) == other  # the old home is free again: still no move back
        assert moves(router) == 1
        info = await (await http.get(f"{router.url}/debug/sessions", params={"session": "agent-1"})).json()
        assert info["home"] == other and info["moves"] == 1


async def test_concurrent_sub_agent_calls_spread_and_each_keeps_its_home() -> None:
    rng = random.Random(3)
    async with stack(3) as (_engines, router, http):
        await turn(http, router, words(50, rng), {"x-session-id": "team"})
        agents = [f"a{i}" for i in range(6)]
        first = await asyncio.gather(*(turn(http, router, words(1500, rng), {"x-session-id": "team", "x-agent-id": a},
                                            max_tokens=30) for a in agents))
        assert len(set(first)) > 1, first  # concurrent sub-agents spread over the endpoints
        again = [await turn(http, router, words(50, rng), {"x-session-id": "team", "x-agent-id": a}) for a in agents]
        assert again == first  # each sub-agent stays on its own home
        for a, home in zip(agents, first, strict=True):
            r = await http.get(f"{router.url}/debug/sessions", params={"session": "team", "agent": a})
            assert (await r.json())["home"] == home


@pytest.mark.parametrize("turn_priority", [True, False])
async def test_a_live_sessions_turn_is_dispatched_before_a_new_sessions_first_turn(turn_priority: bool) -> None:
    rng = random.Random(4)
    async with stack(1, flow_per_endpoint=1, turn_priority=turn_priority) as (_engines, router, http):
        await turn(http, router, words(30, rng), {"x-session-id": "old"})  # the session is live now
        order: list[str] = []

        async def send(name: str, headers: dict, max_tokens: int = 4) -> None:
            await turn(http, router, words(30, rng), headers, max_tokens=max_tokens)
            order.append(name)

        blocker = asyncio.create_task(send("blocker", {}, max_tokens=300))  # holds the only slot
        for _ in range(200):
            if router.state.governance.gateway.flow.queue.in_flight == 1:  # type: ignore[union-attr]
                break
            await asyncio.sleep(0.01)
        new = asyncio.create_task(send("new", {"x-session-id": "fresh"}))
        await asyncio.sleep(0.05)  # queued first
        cont = asyncio.create_task(send("continuing", {"x-session-id": "old"}))
        await asyncio.gather(blocker, new, cont)
        assert order == (["blocker", "continuing", "new"] if turn_priority else ["blocker", "new", "continuing"])
