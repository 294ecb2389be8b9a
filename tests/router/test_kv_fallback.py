"""Precise prefix routing without KV-event streams: a warning, ``/health`` details, and the approximate fallback."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
from collections.abc import AsyncIterator

import aiohttp

from llmd_kserve.engine_sim.server import running_engine
from llmd_kserve.router.app import RunningRouter, running_router

MODEL = "llama-8b-shape"
ENGINES, BLOCKS = 4, 512
PREFIX, SUFFIX, GROUPS, REPEATS = 2048, 32, 8, 6


@contextlib.asynccontextmanager
async def blind_cluster(config: str, **router_kw) -> AsyncIterator[tuple[list, RunningRouter]]:
    """4 engines started without a KV-event publisher, a router given their plain URLs (no ``#kv=``)."""
    async with contextlib.AsyncExitStack() as stack:
        engines = [await stack.enter_async_context(running_engine(
            port=0, host="127.0.0.1", model=MODEL, time_scale=0.02, seed=i, num_blocks=BLOCKS))
            for i in range(ENGINES)]
        router = await stack.enter_async_context(running_router(
            endpoints=[e.url for e in engines], config=config, scrape_interval=0.02, **router_kw))
        async with aiohttp.ClientSession() as s:
            for _ in range(500):  # until every engine has been scraped (the health filter keeps only fresh ones)
                if (await (await s.get(f"{router.url}/health")).json())["healthy"] == ENGINES:
                    break
                await asyncio.sleep(0.02)
            else:
                raise AssertionError("engines never became healthy")
        yield engines, router


def _workload() -> list[list[int]]:
    """Group by group, each group's 2,048-token prefix repeated with a fresh 32-token question."""
    rng = random.Random(3)
    out = []
    for _ in range(GROUPS):
        prefix = [rng.randrange(3, 30000) for _ in range(PREFIX)]
        out += [prefix + [rng.randrange(3, 30000) for _ in range(SUFFIX)] for _ in range(REPEATS)]
    return out


async def _engine_hit_rate(engines: list) -> float:
    """Prefix-cache hits / queries summed over the engines' own ``/metrics`` counters."""
    hits = queries = 0.0
    async with aiohttp.ClientSession() as s:
        for e in engines:
            text = await (await s.get(f"{e.url}/metrics")).text()
            hits += sum(float(v) for v in re.findall(r"^vllm:prefix_cache_hits_total\{[^}]*\} (\S+)$", text, re.M))
            queries += sum(float(v) for v in
                           re.findall(r"^vllm:prefix_cache_queries_total\{[^}]*\} (\S+)$", text, re.M))
    assert queries > 0
    return hits / queries


async def _run(config: str, prompts: list[list[int]]) -> tuple[float, dict, set[str]]:
    async with blind_cluster(config) as (engines, router), aiohttp.ClientSession() as s:
        health = await (await s.get(f"{router.url}/health")).json()
        used = set()
        for p in prompts:
            async with s.post(f"{router.url}/v1/completions",
                              json={"model": MODEL, "prompt": p, "max_tokens": 2}) as r:
                assert r.status == 200, await r.text()
                used.add(r.headers["x-llmd-endpoint"])
        return await _engine_hit_rate(engines), health, used


async def test_default_without_kv_events_warns_and_falls_back_to_the_approximate_index(caplog) -> None:
    prompts = _workload()
    with caplog.at_level(logging.WARNING, logger="llmd_kserve.control.runtime"):
        default_rate, default_health, default_used = await _run("default", prompts)
    rr_rate, rr_health, rr_used = await _run("round-robin", prompts)
    print(f"engine-reported prefix hit rate: default {default_rate:.3f}, round-robin {rr_rate:.3f}")

    warned = [r.getMessage() for r in caplog.records if "no KV-event stream" in r.getMessage()]
    assert len(warned) == 1 and "4 of 4 endpoints" in warned[0]
    details = default_health["details"]
    assert details["prefix_fallback"] == "approx" and len(details["no_kv_events"]) == ENGINES
    assert "details" not in rr_health  # round-robin reads no KV events: nothing is missing
    assert len(default_used) > 1 and len(rr_used) == ENGINES
    assert default_rate >= rr_rate + 0.3, (default_rate, rr_rate)
