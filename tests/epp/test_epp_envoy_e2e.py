"""End to end through a real Envoy with our EPP and simulated engines: the four OpenAI call shapes, and the
shared-prefix workload's cache-hit rate next to the Python router's on identical fresh engines."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator

import aiohttp
import httpx
import pytest

from llmd_kserve.bench.loadgen import LoadConfig, run_load
from llmd_kserve.bench.workloads.arrivals import ArrivalSpec
from llmd_kserve.bench.workloads.generators import build_requests
from llmd_kserve.bench.workloads.specs import SharedPrefixSpec
from llmd_kserve.control.runtime import Runtime
from llmd_kserve.engine_sim.server import running_engine
from llmd_kserve.router.app import running_router
from llmd_kserve.stack.procs import free_port as _free_port
from tests.epp.gateway import gateway

pytestmark = pytest.mark.slow
MODEL = "llama-8b-shape"


async def _wait_live(state: Runtime, engines: list) -> None:
    """ZMQ slow joiner: poke each engine until its KV events reach the index, and until it has been scraped."""
    rng = random.Random(7)
    async with aiohttp.ClientSession() as session:
        for _ in range(500):
            stats = state.subscriber.stats()
            pending = [e for e in engines if stats.get(e.url) is None or stats[e.url].messages == 0]
            if not pending and all(not s.metrics.stale for s in state.endpoint_states()):
                return
            for e in pending:
                body = {"model": MODEL, "prompt": " ".join(f"warm{rng.random()}" for _ in range(40)), "max_tokens": 1}
                async with session.post(f"{e.url}/v1/completions", json=body) as r:
                    assert r.status == 200
            await asyncio.sleep(0.02)
    raise AssertionError("KV-event subscriptions never became live")


@contextlib.asynccontextmanager
async def engines(n: int = 2, **kw) -> AsyncIterator[list]:
    async with contextlib.AsyncExitStack() as stack:
        yield [await stack.enter_async_context(running_engine(
            model=MODEL, time_scale=0.02, seed=i, kv_events_endpoint=f"tcp://127.0.0.1:{_free_port()}", **kw))
            for i in range(n)]


def _specs(engs: list) -> list[str]:
    return [f"{e.url}#kv={e.kv_events_endpoint}" for e in engs]


@pytest.mark.parametrize("mode", ["full", "headers", "none"])
async def test_openai_calls_through_envoy(tmp_path, mode):
    async with engines() as engs, gateway(tmp_path, _specs(engs), config="default", response_mode=mode) as gw:
        await _wait_live(gw.epp.state, engs)
        async with httpx.AsyncClient(base_url=gw.url, timeout=30) as c:
            r = await c.post("/v1/completions", json={"model": MODEL, "prompt": "hello " * 40, "max_tokens": 8})
            assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 8
            assert r.headers["x-llmd-endpoint"] in {e.url for e in engs}
            r = await c.post("/v1/chat/completions", json={
                "model": MODEL, "messages": [{"role": "user", "content": "hi there"}], "max_tokens": 8})
            assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"]
            for path, extra in (("/v1/completions", {"prompt": "stream me " * 30}),
                                ("/v1/chat/completions", {"messages": [{"role": "user", "content": "stream"}]})):
                async with c.stream("POST", path, json={"model": MODEL, "max_tokens": 8, "stream": True,
                                                        "stream_options": {"include_usage": True}, **extra}) as r:
                    assert r.status_code == 200
                    events = [line async for line in r.aiter_lines() if line.startswith("data: ")]
                assert events[-1] == "data: [DONE]" and '"usage"' in events[-2] and len(events) >= 9
            r = await c.get("/v1/models")
            assert r.status_code == 200 and r.json()["data"][0]["id"] == MODEL
        await asyncio.sleep(0.3)
        outcomes = [d["outcome"] for d in gw.epp.state.decisions.recent()]
        assert outcomes == ["ok"] * 4


async def test_shared_prefix_hit_rate_matches_python_router(tmp_path):
    spec = SharedPrefixSpec(num_groups=6, prompts_per_group=6, system_prompt_len=1024, question_len=32, output_len=4)
    requests = build_requests(spec, random.Random(3))
    arrival = ArrivalSpec(pattern="concurrency", concurrency=2)
    rates = {}
    for path in ("router", "envoy", "envoy none", "envoy http"):
        async with engines(num_blocks=2048) as engs:
            ctx = (running_router(endpoints=_specs(engs), config="precise-prefix", scrape_interval=0.02)
                   if path == "router" else gateway(tmp_path, _specs(engs), config="precise-prefix",
                                                    response_mode="none" if path == "envoy none" else "full",
                                                    http_pick=path == "envoy http"))
            async with ctx as front:
                state = front.state if path == "router" else front.epp.state
                await _wait_live(state, engs)
                result = await run_load(requests, arrival, LoadConfig(
                    target=front.url, model=MODEL, engine_urls=[e.url for e in engs], progress=False))
        assert all(r.ok for r in result.results), [r.error for r in result.results if not r.ok][:3]
        rates[path] = result.engine_hit_rate
    print("engine prefix-cache hit rate:", rates)
    assert rates["router"] > 0.5  # the workload does reuse prefixes
    assert abs(rates["router"] - rates["envoy"]) <= 0.05, rates
    assert abs(rates["router"] - rates["envoy none"]) <= 0.05, rates
    assert abs(rates["router"] - rates["envoy http"]) <= 0.05, rates
