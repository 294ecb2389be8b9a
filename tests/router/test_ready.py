"""``GET /ready``: 503 until the router has scraped its endpoints and its KV index is warm; ``/health`` stays liveness.
Several routers (replicas) on one engine each get all of its KV events."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import aiohttp

from llmd_kserve.engine_sim.server import running_engine
from llmd_kserve.router.app import RunningRouter, running_router
from llmd_kserve.stack.procs import free_port

MODEL = "llama-8b-shape"


async def _get(url: str) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as s, s.get(url) as r:
        return r.status, await r.json()


async def _until(url: str, status: int, tries: int = 300) -> dict:
    for _ in range(tries):
        got, body = await _get(url)
        if got == status:
            return body
        await asyncio.sleep(0.02)
    raise AssertionError(f"{url} never answered {status}; last: {got} {body}")


@contextlib.asynccontextmanager
async def _used_engine() -> AsyncIterator[tuple[str, str]]:
    """An engine that has served a prompt (its cache is not empty) and is idle now: (url, KV-event address)."""
    kv = f"tcp://127.0.0.1:{free_port()}"
    async with running_engine(port=0, host="127.0.0.1", model=MODEL, time_scale=0.02, kv_events_endpoint=kv) as e:
        async with aiohttp.ClientSession() as s, s.post(f"{e.url}/v1/completions", json={
                "model": MODEL, "prompt": "a cached document " * 40, "max_tokens": 1}) as r:
            assert r.status == 200
        yield e.url, kv


async def _router(spec: str, **kw) -> contextlib.AbstractAsyncContextManager[RunningRouter]:
    return running_router(endpoints=[spec], config="precise-prefix", scrape_interval=0.05, **kw)


async def test_ready_waits_for_kv_events_from_an_idle_engine_that_has_cached_prompts():
    async with _used_engine() as (url, kv), await _router(f"{url}#kv={kv}", ready_kv_grace_s=600) as router:
        await _until(f"{router.url}/health", 200)  # alive and its engine healthy ...
        body = await _until(f"{router.url}/ready", 503)  # ... but its index has not heard the engine yet
        assert body == {"status": "kv_warming", "waiting": [url]}
        for _ in range(50):  # the engine works again: its events reach the subscriber, the index is warm
            async with aiohttp.ClientSession() as s, s.post(f"{url}/v1/completions", json={
                    "model": MODEL, "prompt": "a new document " * 40, "max_tokens": 1}) as r:
                assert r.status == 200
            if (await _get(f"{router.url}/ready"))[0] == 200:
                break
            await asyncio.sleep(0.05)
        assert await _get(f"{router.url}/ready") == (200, {"status": "ready"})


async def test_an_idle_engine_counts_as_warm_after_the_grace_period():
    async with _used_engine() as (url, kv), await _router(f"{url}#kv={kv}", ready_kv_grace_s=0.3) as router:
        assert await _until(f"{router.url}/ready", 200) == {"status": "ready"}
        sub = router.state.subscriber.stats()[url]
        assert sub.connected_at is not None and sub.messages == 0  # ready by the grace period, not by an event


async def test_a_fresh_engine_is_warm_once_subscribed():
    """An engine that never served a prompt has an empty cache: the empty index is exact."""
    kv = f"tcp://127.0.0.1:{free_port()}"
    async with running_engine(port=0, host="127.0.0.1", model=MODEL, kv_events_endpoint=kv) as e, \
            await _router(f"{e.url}#kv={kv}", ready_kv_grace_s=600) as router:
        assert await _until(f"{router.url}/ready", 200) == {"status": "ready"}


async def test_no_reachable_endpoint_is_not_ready_and_not_healthy():
    dead = f"http://127.0.0.1:{free_port()}"
    async with await _router(dead) as router:
        for _ in range(300):  # "first_scrape" until the first scrape of the dead endpoint has failed
            status, body = await _get(f"{router.url}/ready")
            assert status == 503 and body["status"] in ("first_scrape", "no_healthy_endpoint"), body
            if body["status"] == "no_healthy_endpoint":
                break
            await asyncio.sleep(0.02)
        assert body == {"status": "no_healthy_endpoint", "waiting": [dead]}
        assert (await _get(f"{router.url}/health"))[0] == 503


async def test_ready_needs_no_key_when_keys_are_configured():
    kv = f"tcp://127.0.0.1:{free_port()}"
    async with running_engine(port=0, host="127.0.0.1", model=MODEL, kv_events_endpoint=kv) as e, \
            await _router(f"{e.url}#kv={kv}", api_keys=("operator-secret-0123456789",)) as router:
        assert await _until(f"{router.url}/ready", 200) == {"status": "ready"}
        async with aiohttp.ClientSession() as s, s.get(f"{router.url}/metrics") as r:
            assert r.status == 401  # the other routes still need one


async def test_two_routers_on_one_engine_both_index_every_event():
    """Router replicas each subscribe to the engine's PUB socket (as with vLLM): both get every event."""
    kv = f"tcp://127.0.0.1:{free_port()}"
    async with running_engine(port=0, host="127.0.0.1", model=MODEL, time_scale=0.02, kv_events_endpoint=kv) as e, \
            await _router(f"{e.url}#kv={kv}") as r1, await _router(f"{e.url}#kv={kv}") as r2:
        for r in (r1, r2):
            await _until(f"{r.url}/ready", 200)
        async with aiohttp.ClientSession() as s:
            for i in range(5):
                async with s.post(f"{r1.url}/v1/completions", json={
                        "model": MODEL, "prompt": f"document {i} " * 60, "max_tokens": 1}) as resp:
                    assert resp.status == 200
        for _ in range(200):
            stats = [r.state.subscriber.stats()[e.url] for r in (r1, r2)]
            if stats[0].messages == stats[1].messages > 0 and len(r1.state.index) == len(r2.state.index):
                break
            await asyncio.sleep(0.02)
        assert stats[0].messages == stats[1].messages > 0 and stats[0].gaps == stats[1].gaps == 0
        assert len(r1.state.index) == len(r2.state.index) > 0  # r2 routed nothing, yet it knows the same blocks
