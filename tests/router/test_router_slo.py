"""SLO admission through the router over real HTTP, with simulated engines: under overload a sheddable request that
no endpoint can serve within its TTFT target gets 429 + Retry-After, a priority-0 one is served, and /metrics counts
both per priority band."""

from __future__ import annotations

import asyncio
import re

import aiohttp

from llmd_kserve.engine_sim.server import running_engine
from llmd_kserve.router.app import running_router

MODEL = "llama-8b-shape"


def _counter(text: str, band: str, outcome: str) -> float:
    m = re.search(rf'llmd_router_slo_requests_total{{band="{band}",outcome="{outcome}"}} (\S+)', text)
    return float(m.group(1)) if m else 0.0


async def test_a_sheddable_request_is_shed_under_overload_while_priority_zero_is_served():
    async with (running_engine(port=0, host="127.0.0.1", model=MODEL, seed=0) as e0,
                running_engine(port=0, host="127.0.0.1", model=MODEL, seed=1) as e1,
                running_router(endpoints=[e0.url, e1.url], config="default", scrape_interval=0.05,
                               profile="cpu-tiny-llama") as router,
                aiohttp.ClientSession() as s):
        url = f"{router.url}/v1/completions"

        async def send(prompt: str, headers: dict[str, str], max_tokens: int = 2) -> tuple[int, dict[str, str], dict]:
            body = {"model": MODEL, "prompt": prompt, "max_tokens": max_tokens}
            async with s.post(url, json=body, headers=headers) as r:
                return r.status, dict(r.headers), await r.json()

        # idle: a sheddable request is admitted and its TTFT counted
        status, _, _ = await send("a short question", {"x-llmd-priority": "-1", "x-llm-d-slo-ttft-ms": "5000"})
        assert status == 200
        # overload: 40 prompts of ~4,000 tokens, each ~0.8 s of prefill on the router's (CPU) latency profile: ~16 s
        # of predicted prefill work per engine (the router's fluid queue drains in real time, however fast the
        # simulated engines really are), and long answers keep them in flight (no engine is idle)
        load = [asyncio.create_task(send(f"request {i} " + "word " * 4000, {}, 2000)) for i in range(40)]
        while router.state.scheduler.in_flight() < 40:
            await asyncio.sleep(0.01)
        slo = {"x-llm-d-slo-ttft-ms": "500"}
        shed_status, shed_headers, shed_body = await send("a sheddable question", {**slo, "x-llmd-priority": "-1"})
        kept_status, _, _ = await send("an important question", {**slo, "x-llmd-priority": "0"})
        assert shed_status == 429, shed_body
        assert int(shed_headers["Retry-After"]) >= 1 and shed_headers["x-llmd-drop-reason"] == "slo_unmet"
        assert shed_body["error"]["type"] == "RateLimitError" and shed_body["error"]["code"] == 429
        assert kept_status == 200
        for task in load:
            task.cancel()
        await asyncio.gather(*load, return_exceptions=True)
        bad, _, body = await send("x", {"x-llm-d-slo-ttft-ms": "soon"})
        assert bad == 400 and body["error"]["param"] == "x-llm-d-slo-ttft-ms"
        async with s.get(f"{router.url}/metrics") as r:
            text = await r.text()
        assert [_counter(text, "-1", o) for o in ("admitted", "shed", "ttft_met")] == [1, 1, 1]
        assert _counter(text, "0", "admitted") == 1
        assert _counter(text, "0", "ttft_met") + _counter(text, "0", "ttft_missed") == 1
