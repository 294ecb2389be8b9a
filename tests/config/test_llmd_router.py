"""An llm-d v1.0 EndpointPickerConfig, written from llm-d's documentation, run by a real router over simulated
engines: repeats of a prompt stick to the engine that cached it, concurrent new prompts spread by token load."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import aiohttp

from llmd_kserve.engine_sim.server import running_engine
from llmd_kserve.router.app import running_router

MODEL = "llama-8b-shape"
# llm-d's optimized baseline as its guide writes it, with the filter's parameters spelled out as in the filter's
# README (the values are llm-d's defaults, except a 5 s TTFT penalty).
CONFIG = """\
apiVersion: llm-d.ai/v1
kind: EndpointPickerConfig
plugins:
- type: approx-prefix-cache-producer
- type: inflight-load-producer
- type: prefix-cache-affinity-filter
  parameters:
    affinityThreshold: 0.80
    maxTTFTPenaltyMs: 5000
    ttftSource: prefillThroughput
    peakPrefillThroughput: 15928
- type: token-load-scorer
schedulingProfiles:
- name: default
  plugins:
  - pluginRef: prefix-cache-affinity-filter
  - pluginRef: token-load-scorer
"""


def _doc(group: int) -> str:
    return " ".join(f"doc{group}-w{i}" for i in range(300))  # a few hundred tokens: several 64-token blocks


async def _complete(s: aiohttp.ClientSession, url: str, text: str, max_tokens: int) -> tuple[str, int]:
    async with s.post(f"{url}/v1/completions", json={"model": MODEL, "prompt": text, "max_tokens": max_tokens}) as r:
        assert r.status == 200, await r.text()
        body = await r.json()
        cached = (body["usage"].get("prompt_tokens_details") or {}).get("cached_tokens") or 0
        return r.headers["x-llmd-endpoint"], cached


async def test_llmd_v1_config_routes_through_a_real_router(tmp_path: Path):
    path = tmp_path / "llm-d-v1.yaml"
    path.write_text(CONFIG)
    async with contextlib.AsyncExitStack() as stack:
        engines = [await stack.enter_async_context(running_engine(port=0, model=MODEL, seed=i, time_scale=0.5))
                   for i in range(3)]
        router = await stack.enter_async_context(running_router(endpoints=[e.url for e in engines],
                                                                config=str(path), scrape_interval=0.02))
        s = await stack.enter_async_context(aiohttp.ClientSession())
        for _ in range(200):  # every engine scraped (block size, KV capacity) before the first decision
            health = await (await s.get(f"{router.url}/health")).json()
            if health["healthy"] == 3:
                break
            await asyncio.sleep(0.02)
        assert router.state.scheduler.current.config.api_version == "llm-d.ai/v1"

        # concurrent new prompts: each sees the others' tokens in flight and goes to a different engine
        firsts = await asyncio.gather(*(_complete(s, router.url, f"{_doc(g)} first?", 40) for g in range(3)))
        assert len({ep for ep, _ in firsts}) == 3, firsts
        # repeats: the affinity filter keeps each prompt on the engine that cached it
        for g, (holder, _) in enumerate(firsts):
            for q in range(3):
                ep, cached = await _complete(s, router.url, f"{_doc(g)} question {q}?", 2)
                assert ep == holder and cached > 0, (g, q, ep, holder, cached)
        decisions = (await (await s.get(f"{router.url}/debug/decisions?limit=12")).json())["decisions"]
    scored = [d for d in decisions if d["scores"]]
    assert scored and all(set(d["scores"]) == {"default/token-load-scorer"} for d in scored)
