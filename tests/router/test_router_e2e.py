"""End to end: the router in front of in-process simulated engines with KV events, and the official openai client."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator

import aiohttp
import openai
import pytest

from llmd_kserve.engine_sim.server import running_engine
from llmd_kserve.router.app import RunningRouter, running_router
from llmd_kserve.stack.procs import free_port as _free_port

MODEL = "llama-8b-shape"


@contextlib.asynccontextmanager
async def cluster(n: int, config: str, **router_kw) -> AsyncIterator[tuple[list, RunningRouter]]:
    """``n`` engines publishing KV events, and a router subscribed to all of them, every subscription live."""
    async with contextlib.AsyncExitStack() as stack:
        engines = [await stack.enter_async_context(running_engine(
            port=0, host="127.0.0.1", model=MODEL, time_scale=0.02, seed=i,
            kv_events_endpoint=f"tcp://127.0.0.1:{_free_port()}")) for i in range(n)]
        specs = [f"{e.url}#kv={e.kv_events_endpoint}" for e in engines]
        router = await stack.enter_async_context(running_router(endpoints=specs, config=config, scrape_interval=0.02,
                                                                       **router_kw))
        session = await stack.enter_async_context(aiohttp.ClientSession())
        rng = random.Random(7)
        for _ in range(500):  # ZMQ slow joiner: poke each engine directly until its events reach the router
            stats = router.state.subscriber.stats()
            health = await (await session.get(f"{router.url}/health")).json()
            pending = [e for e in engines if stats.get(e.url) is None or stats[e.url].messages == 0]
            if not pending and health["healthy"] == n:
                break
            for e in pending:
                body = {"model": MODEL, "prompt": " ".join(f"warm{rng.random()}" for _ in range(40)), "max_tokens": 1}
                async with session.post(f"{e.url}/v1/completions", json=body) as r:
                    assert r.status == 200
            await asyncio.sleep(0.02)
        else:
            raise AssertionError("KV-event subscriptions never became live")
        yield engines, router


def _groups(n_groups: int, repeats: int) -> list[list[str]]:
    rng = random.Random(1)
    out = []
    for g in range(n_groups):
        prefix = " ".join(f"doc{g}-{rng.randrange(10**6)}" for _ in range(120))  # ~20+ full blocks
        out.append([f"{prefix} question {i}: {rng.random()}" for i in range(repeats)])
    return out


async def _run_groups(router: RunningRouter, groups: list[list[str]]) -> list[list[tuple[str, int]]]:
    """Send each group's prompts in turn; returns (endpoint, cached_tokens) per request."""
    out = []
    async with aiohttp.ClientSession() as s:
        for prompts in groups:
            rows = []
            for p in prompts:
                async with s.post(f"{router.url}/v1/completions",
                                  json={"model": MODEL, "prompt": p, "max_tokens": 2}) as r:
                    assert r.status == 200, await r.text()
                    body = await r.json()
                    details = body["usage"].get("prompt_tokens_details") or {}
                    rows.append((r.headers["x-llmd-endpoint"], details.get("cached_tokens") or 0))
                await asyncio.sleep(0.05)  # let the engine's BlockStored events reach the index
            out.append(rows)
    return out


async def test_precise_prefix_routes_repeats_to_holder_and_round_robin_does_not():
    groups = _groups(n_groups=4, repeats=4)
    async with cluster(3, "precise-prefix") as (_, router):
        precise = await _run_groups(router, groups)
        async with aiohttp.ClientSession() as s:
            decisions = (await (await s.get(f"{router.url}/debug/decisions?limit=5")).json())["decisions"]
    async with cluster(3, "round-robin") as (_, router):
        rr = await _run_groups(router, groups)

    for rows in precise:  # every repeat goes to the engine that served (and cached) the first request
        holder = rows[0][0]
        assert all(ep == holder for ep, _ in rows[1:]), rows
        assert all(cached > 0 for _, cached in rows[1:]), rows
    assert any(d["predicted_cached_tokens"] > 0 for d in decisions)
    assert all(d["scores"] and d["totals"] for d in decisions)
    assert any("precise" in name for name in decisions[-1]["scores"])

    rr_repeats = [row for rows in rr for row in rows[1:]]
    assert len({ep for rows in rr for ep, _ in rows}) == 3  # spread over every engine
    assert sum(1 for _, c in rr_repeats if c == 0) >= len(rr_repeats) // 2  # mostly landing where it is not cached
    assert sum(c for rows in precise for _, c in rows[1:]) > 2 * sum(c for _, c in rr_repeats)


async def test_openai_client_streams_through_router():
    async with cluster(2, "default") as (engines, router):
        client = openai.AsyncOpenAI(base_url=f"{router.url}/v1", api_key="unused", max_retries=0)
        try:
            stream = await client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=8,
                                                     stream=True)
            texts = [c.choices[0].text async for c in stream if c.choices]
            assert len(texts) >= 1 and all(isinstance(t, str) for t in texts)

            chat = await client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "hello"}], max_tokens=6, stream=True,
                stream_options={"include_usage": True})
            chunks = [c async for c in chat]
            assert any(c.choices and c.choices[0].delta.content for c in chunks)
            assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 6

            raw = await client.completions.with_raw_response.create(model=MODEL, prompt="hi", max_tokens=2)
            assert raw.headers["x-llmd-endpoint"] in {e.url for e in engines}
            assert raw.parse().usage.completion_tokens == 2

            with pytest.raises(openai.BadRequestError):
                await client.completions.create(model=MODEL, prompt="hi", max_tokens=0)
            with pytest.raises(openai.NotFoundError):
                await client.completions.create(model="no-such-model", prompt="hi", max_tokens=2)
        finally:
            await client.close()


async def test_render_tokenizer_matches_engine_token_counts():
    """``tokenizer="render"``: the router schedules on the engine's own token ids (vLLM's /render endpoints)."""
    async with cluster(2, "precise-prefix", tokenizer="render") as (_, router), aiohttp.ClientSession() as s:
        prompt = " ".join(f"ctx{i}" for i in range(200))
        rows = []
        for rid in ("r1", "r2"):
            async with s.post(f"{router.url}/v1/completions", headers={"x-request-id": rid},
                              json={"model": MODEL, "prompt": prompt, "max_tokens": 2}) as r:
                rows.append((r.headers["x-llmd-endpoint"], (await r.json())["usage"]))
            await asyncio.sleep(0.05)
        decisions = (await (await s.get(f"{router.url}/debug/decisions?limit=2")).json())["decisions"]
    assert router.state.render is not None and router.state.render.hits >= 1
    assert [d["prompt_tokens"] for d in decisions] == [u["prompt_tokens"] for _, u in rows]
    assert rows[0][0] == rows[1][0] and decisions[1]["predicted_cached_tokens"] > 0
