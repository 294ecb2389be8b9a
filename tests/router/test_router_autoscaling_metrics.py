"""The autoscaling signals on a real router's /metrics over simulated engines: the queue per priority band builds
under flow control and drains, the TTFT headroom is the target while idle and goes negative under overload, and the
endpoint gauges count the pool."""

from __future__ import annotations

import asyncio
import re

import aiohttp

from llmd_kserve.engine_sim.server import running_engine
from llmd_kserve.governance.keys import add_key
from llmd_kserve.router.app import running_router

MODEL = "llama-8b-shape"


def gauge(text: str, name: str, labels: str = "") -> float | None:
    m = re.search(rf"^{name}{re.escape('{' + labels + '}') if labels else ''} (\S+)$", text, re.M)
    return float(m.group(1)) if m else None


async def scrape(s: aiohttp.ClientSession, url: str, key: str | None = None) -> str:
    async with s.get(f"{url}/metrics", headers={"Authorization": f"Bearer {key}"} if key else {}) as r:
        assert r.status == 200
        return await r.text()


async def wait_for(s, url, predicate, key=None, tries=400) -> str:
    for _ in range(tries):
        text = await scrape(s, url, key)
        if predicate(text):
            return text
        await asyncio.sleep(0.02)
    raise AssertionError(f"never seen; last scrape:\n{text}")


async def test_queue_depth_per_band_builds_under_flow_control_and_drains(tmp_path):
    keys = tmp_path / "keys.yaml"
    high, _ = add_key(keys, tenant="a", priority=5)
    low, _ = add_key(keys, tenant="b", priority=1)
    admin, _ = add_key(keys, tenant="ops", admin=True)
    async with (running_engine(port=0, host="127.0.0.1", model=MODEL, seed=0) as e0,
                running_engine(port=0, host="127.0.0.1", model=MODEL, seed=1) as e1,
                running_router(endpoints=[e0.url, e1.url], config="default", scrape_interval=0.05,
                               keys_file=str(keys), flow_per_endpoint=1, flow_headroom=1) as router,
                aiohttp.ClientSession() as s):
        text = await wait_for(s, router.url, lambda t: gauge(t, "llmd_router_endpoints_ready", 'role="both"') == 2,
                              admin)
        assert gauge(text, "llmd_router_queue_depth", 'band="0"') == 0  # the default band, before any queue
        assert gauge(text, "llmd_router_endpoints", 'role="both"') == 2
        assert 0 <= gauge(text, "llmd_router_kv_usage_ratio", 'role="both"') < 0.05
        assert gauge(text, "llmd_router_ttft_headroom_seconds") is None  # no --ttft-slo-ms: not exported

        async def send(key: str, i: int) -> int:
            body = {"model": MODEL, "prompt": f"request {i} " + "word " * 200, "max_tokens": 4000}
            async with s.post(f"{router.url}/v1/completions", json=body,
                              headers={"Authorization": f"Bearer {key}"}) as r:
                await r.read()
                return r.status

        load = [asyncio.create_task(send(high if i % 2 else low, i)) for i in range(10)]
        # 2 slots (1 per endpoint); the rest wait in their key's band
        text = await wait_for(s, router.url, lambda t: (gauge(t, "llmd_router_queue_depth", 'band="5"') or 0)
                              + (gauge(t, "llmd_router_queue_depth", 'band="1"') or 0) >= 8, admin)
        assert gauge(text, "llmd_router_queue_depth", 'band="5"') >= 3
        assert gauge(text, "llmd_router_queue_depth", 'band="1"') >= 3
        assert gauge(text, "llmd_router_queue_depth", 'band="0"') == 0
        # the answers under way hold KV blocks: the mean usage moves once the engines' metrics show them
        await wait_for(s, router.url, lambda t: (gauge(t, "llmd_router_kv_usage_ratio", 'role="both"') or 0) > 0, admin)
        for t in load:
            t.cancel()
        await asyncio.gather(*load, return_exceptions=True)
        text = await wait_for(s, router.url, lambda t: gauge(t, "llmd_router_queue_depth", 'band="5"') == 0
                              and gauge(t, "llmd_router_queue_depth", 'band="1"') == 0, admin)
        assert gauge(text, "llmd_router_queue_depth", 'band="0"') == 0  # every band seen stays exported, at 0


async def test_ttft_headroom_is_the_target_when_idle_and_negative_under_overload():
    async with (running_engine(port=0, host="127.0.0.1", model=MODEL, seed=0) as e0,
                running_engine(port=0, host="127.0.0.1", model=MODEL, seed=1) as e1,
                running_router(endpoints=[e0.url, e1.url], config="default", scrape_interval=0.05,
                               profile="cpu-tiny-llama", ttft_slo_s=0.5) as router,
                aiohttp.ClientSession() as s):
        url = f"{router.url}/v1/completions"

        async def send(prompt: str, max_tokens: int = 2) -> int:
            async with s.post(url, json={"model": MODEL, "prompt": prompt, "max_tokens": max_tokens}) as r:
                await r.read()
                return r.status

        text = await scrape(s, router.url)
        assert gauge(text, "llmd_router_ttft_slo_seconds") == 0.5
        assert gauge(text, "llmd_router_ttft_headroom_seconds") == 0.5  # idle: nothing waits
        assert await send("a short question") == 200
        text = await scrape(s, router.url)
        light = gauge(text, "llmd_router_ttft_headroom_seconds")
        assert 0 < light < 0.5  # its own prefill, predicted, on an idle endpoint
        # overload: 40 prompts of ~4,000 tokens, each ~0.8 s of predicted prefill on the router's (CPU) profile
        load = [asyncio.create_task(send(f"request {i} " + "word " * 4000, 2000)) for i in range(40)]
        while router.state.scheduler.in_flight() < 40:
            await asyncio.sleep(0.01)
        text = await scrape(s, router.url)
        heavy = gauge(text, "llmd_router_ttft_headroom_seconds")
        assert heavy < 0, heavy  # no endpoint is predicted to meet 0.5 s any more
        for t in load:
            t.cancel()
        await asyncio.gather(*load, return_exceptions=True)
