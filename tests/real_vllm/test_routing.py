"""Routing on real engines: the router's predicted cached tokens equal what vLLM reports per request (text, token-id
and chat prompts, also through the ``up`` router), shared prefixes land on the replica holding them, and the
router's endpoint page shows the engines' scraped metrics."""

from __future__ import annotations

import random
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.real_vllm.conftest import BLOCK, RealStack, counter, held_blocks, router_over, token_ids, wait_for

pytestmark = [pytest.mark.real_vllm, pytest.mark.timeout(900)]


def _words(n: int, rng: random.Random) -> str:
    return " ".join(f"{rng.choice(['alpha', 'beta', 'gamma', 'delta'])}{rng.randrange(1000)}" for _ in range(n))


def _prompt(kind: str, rng: random.Random) -> dict[str, Any]:
    if kind == "text":
        return {"prompt": _words(120, rng)}
    if kind == "token_ids":
        return {"prompt": token_ids(300, rng)}
    return {"messages": [{"role": "system", "content": _words(60, rng)}, {"role": "user", "content": _words(60, rng)}]}


async def _ask(session: aiohttp.ClientSession, url: str, body: dict[str, Any], rid: str) -> tuple[dict[str, Any], str]:
    path = "/v1/chat/completions" if "messages" in body else "/v1/completions"
    async with session.post(f"{url}{path}", json={**body, "max_tokens": 1}, headers={"x-request-id": rid}) as r:
        assert r.status == 200, await r.text()
        answer: dict[str, Any] = await r.json()
        return answer, r.headers["x-llmd-endpoint"]


async def _decision(session: aiohttp.ClientSession, url: str, rid: str) -> dict[str, Any]:
    async with session.get(f"{url}/debug/decisions", params={"request_id": rid}) as r:
        found: list[dict[str, Any]] = (await r.json())["decisions"]
    assert len(found) == 1, found
    return found[0]


async def _blocks_stored(session: aiohttp.ClientSession, url: str, endpoint: str) -> float:
    page = await (await session.get(f"{url}/metrics")).text()
    return counter(page, "llmd_router_kv_events_blocks_total", endpoint=endpoint)


async def _check_prediction(session: aiohttp.ClientSession, url: str, body: dict[str, Any], tag: str) -> None:
    """Ask twice; the second time the router predicts the engine's cached tokens (within one block)."""
    stored = {e: await _blocks_stored(session, url, e) for e in await _endpoints(session, url)}
    first, target = await _ask(session, url, body, f"{tag}-1")
    assert (await _decision(session, url, f"{tag}-1"))["predicted_cached_tokens"] == 0
    assert first["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    blocks = first["usage"]["prompt_tokens"] // BLOCK

    async def indexed() -> bool:  # KV events are asynchronous: the first answer's blocks have reached the router
        return bool(await _blocks_stored(session, url, target) >= stored[target] + blocks)

    await wait_for(indexed, f"{blocks} blocks of {tag} indexed")
    second, again = await _ask(session, url, body, f"{tag}-2")
    assert again == target
    d = await _decision(session, url, f"{tag}-2")
    reported = second["usage"]["prompt_tokens_details"]["cached_tokens"]
    assert d["reported_cached_tokens"] == reported and reported >= (blocks - 1) * BLOCK > 0
    assert abs(d["predicted_cached_tokens"] - reported) < BLOCK, d


def _holds(state: Any, endpoint: str, ids: list[int], blocks: int) -> bool:
    return held_blocks(state, endpoint, ids) == blocks


async def _endpoints(session: aiohttp.ClientSession, url: str) -> list[str]:
    async with session.get(f"{url}/debug/endpoints") as r:
        return [e["id"] for e in (await r.json())["endpoints"]]


@pytest.mark.parametrize("kind", ["text", "token_ids", "chat"])
async def test_predicted_cached_tokens_equal_the_engines(vllm_up: RealStack, tiny_model_dir: Path, kind: str) -> None:
    rng = random.Random(f"predict-{kind}")
    async with router_over(vllm_up.endpoints, tiny_model_dir) as router, aiohttp.ClientSession() as s:
        await _check_prediction(s, router.url, _prompt(kind, rng), f"predict-{kind}")


async def test_up_router_predicts_the_engines_cached_tokens(vllm_up: RealStack) -> None:
    """``up --engine vllm`` gives its router the model's tokenizer: its prompts are keyed in the engines' ids."""
    rng = random.Random("predict-up")
    async with aiohttp.ClientSession() as s:
        await _check_prediction(s, vllm_up.router_url, _prompt("chat", rng), f"up-{rng.random()}")


@pytest.mark.parametrize("config", ["default", "precise-prefix"])
async def test_shared_prefixes_land_on_the_replica_holding_them(vllm_up: RealStack, tiny_model_dir: Path,
                                                                config: str) -> None:
    rng = random.Random(f"affinity-{config}")
    engines, model = vllm_up.engine_urls, vllm_up.model
    prefixes = [token_ids(8 * BLOCK, rng) for _ in engines]
    async with router_over(vllm_up.endpoints, tiny_model_dir, config=config) as router, \
            aiohttp.ClientSession() as s:
        for engine, prefix in zip(engines, prefixes, strict=True):  # each replica caches its own prefix
            async with s.post(f"{engine}/v1/completions", json={"model": model, "prompt": prefix, "max_tokens": 1}) as r:
                assert r.status == 200
        for engine, prefix in zip(engines, prefixes, strict=True):
            await wait_for(partial(_holds, router.state, engine, prefix, 8), f"prefix of {engine}")
        for round_ in range(2):
            for engine, prefix in zip(engines, prefixes, strict=True):
                body = {"model": model, "prompt": prefix + token_ids(40, rng)}
                answer, target = await _ask(s, router.url, body, f"{config}-{round_}-{engine}")
                assert target == engine
                assert answer["usage"]["prompt_tokens_details"]["cached_tokens"] >= 8 * BLOCK


async def test_endpoint_page_shows_the_engines_metrics(vllm_up: RealStack, tiny_model_dir: Path) -> None:
    engine = vllm_up.engine_urls[0]
    async with router_over(vllm_up.endpoints, tiny_model_dir, scrape_interval=0.2,
                           scrape_idle_interval=0.2) as router, aiohttp.ClientSession() as s:
        async def page() -> dict[str, dict[str, Any]]:
            async with s.get(f"{router.url}/debug/endpoints") as r:
                return {e["id"]: e for e in (await r.json())["endpoints"]}

        shown = await page()
        assert sorted(shown) == sorted(vllm_up.engine_urls)
        for spec in vllm_up.endpoints:
            e = shown[spec.split("#")[0]]
            assert e["kv_events"] == spec.split("kv=")[1].split("&")[0]
            m = e["metrics"]
            assert (m["block_size"], m["num_gpu_blocks"], m["stale"]) == (BLOCK, 512, False)
        # a long stream on one engine: its running count and KV usage show on the page while it runs
        body = {"model": vllm_up.model, "prompt": token_ids(20 * BLOCK, random.Random(5)), "max_tokens": 4000,
                "ignore_eos": True, "stream": True}
        async with s.post(f"{engine}/v1/completions", json=body) as stream:
            assert stream.status == 200
            await stream.content.readline()

            async def busy() -> bool:
                m = (await page())[engine]["metrics"]
                return bool(m["running"] == 1 and m["kv_usage"] > 0)

            await wait_for(busy, "the running request and its KV usage shown")
            other = (await page())[vllm_up.engine_urls[1]]["metrics"]
            assert (other["running"], other["waiting"]) == (0, 0)
        # the stream's connection closed: vLLM aborts the request and the page shows an idle engine again

        async def idle() -> bool:
            m = (await page())[engine]["metrics"]
            return bool(m["running"] == 0 and m["kv_usage"] < 0.01)

        await wait_for(idle, "the engine idle again")
