"""End to end: engines whose KV blocks are 32 tokens (as vLLM on CPU) behind a router told nothing about it. The
router learns the size from the engines, so its predicted cached tokens equal what the engines report and repeats
go to the engine holding the prefix; with ``block_size=16`` forced it is cache-blind, as it used to be."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator
from importlib.resources import files
from pathlib import Path

import aiohttp
import pytest

from llmd_kserve.engine_sim.server import running_engine
from llmd_kserve.router.app import RunningRouter, running_router
from llmd_kserve.stack.procs import free_port

MODEL = "llama-8b-shape"


INDEX_ONLY = (files("llmd_kserve.config") / "shipped" / "precise-prefix.yaml").read_text().replace(
    "- type: precise-prefix-cache-scorer\n",
    "- type: precise-prefix-producer\n  parameters:\n    speculativeTtlS: 0\n- type: precise-prefix-cache-scorer\n")
"""``precise-prefix`` matching on the KV-event index alone (no speculative entries for just-routed prompts)."""


@contextlib.asynccontextmanager
async def cluster(config: Path, **router_kw) -> AsyncIterator[RunningRouter]:
    async with contextlib.AsyncExitStack() as stack:
        engines = [await stack.enter_async_context(running_engine(
            port=0, host="127.0.0.1", model=MODEL, time_scale=0.02, seed=i, block_size=32,
            kv_events_endpoint=f"tcp://127.0.0.1:{free_port()}")) for i in range(2)]
        router = await stack.enter_async_context(running_router(
            endpoints=[f"{e.url}#kv={e.kv_events_endpoint}" for e in engines], config=str(config),
            scrape_interval=0.02, **router_kw))
        session = await stack.enter_async_context(aiohttp.ClientSession())
        rng = random.Random(3)
        for _ in range(500):  # ZMQ slow joiner: poke each engine until its events reach the router
            stats = router.state.subscriber.stats()
            pending = [e for e in engines if stats.get(e.url) is None or stats[e.url].messages == 0]
            if not pending:
                break
            for e in pending:
                body = {"model": MODEL, "prompt": " ".join(f"w{rng.random()}" for _ in range(60)), "max_tokens": 1}
                async with session.post(f"{e.url}/v1/completions", json=body) as r:
                    assert r.status == 200
            await asyncio.sleep(0.02)
        else:
            raise AssertionError("KV-event subscriptions never became live")
        yield router


async def _repeats(router: RunningRouter) -> list[tuple[str, int, int]]:
    """Four prefixes sent three times each: (endpoint, predicted cached, reported cached) of every repeat."""
    rng = random.Random(5)
    prefixes = [" ".join(f"doc{g}-{rng.randrange(10**6)}" for _ in range(150)) for g in range(4)]
    rows = []
    async with aiohttp.ClientSession() as s:
        for r in range(3):
            for g, prefix in enumerate(prefixes):
                rid = f"g{g}-r{r}"
                async with s.post(f"{router.url}/v1/completions", headers={"x-request-id": rid},
                                  json={"model": MODEL, "prompt": f"{prefix} q{r}", "max_tokens": 1}) as resp:
                    assert resp.status == 200
                    body = await resp.json()
                    endpoint = resp.headers["x-llmd-endpoint"]
                decision = (await (await s.get(f"{router.url}/debug/decisions",
                                               params={"request_id": rid})).json())["decisions"][-1]
                if r:
                    rows.append((endpoint, decision["predicted_cached_tokens"],
                                 body["usage"]["prompt_tokens_details"]["cached_tokens"]))
                await asyncio.sleep(0.05)  # the engine's BlockStored reaches the index
    return rows


@pytest.fixture
def config(tmp_path) -> Path:
    assert "speculativeTtlS: 0" in INDEX_ONLY
    path = tmp_path / "index-only.yaml"
    path.write_text(INDEX_ONLY)
    return path


async def test_the_engines_block_size_is_learnt_and_predictions_match(config):
    async with cluster(config) as router:
        rows = await _repeats(router)
        sizes = router.state.block_sizes
        assert sizes is not None
        assert {sizes.describe(s)["block_size"] for s in router.state.endpoint_states()} == {32}
    assert all(predicted == reported > 0 for _, predicted, reported in rows), rows


async def test_a_forced_wrong_block_size_is_cache_blind(config):
    async with cluster(config, block_size=16) as router:
        rows = await _repeats(router)
    assert all(predicted == 0 for _, predicted, _ in rows) and any(reported for _, _, reported in rows), rows
