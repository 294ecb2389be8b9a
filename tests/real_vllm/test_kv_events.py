"""Real vLLM KV events reach the router's index: BlockStored, BlockRemoved (the engine evicting cached blocks under
pressure), AllBlocksCleared (``POST /reset_prefix_cache``, published at the engine's next step), and the events
missed while the router's subscriber was down, recovered from the engine's replay socket."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from llmd_kserve.control.endpoints import parse_endpoint_url
from llmd_kserve.kvcache.hashing import block_keys
from llmd_kserve.kvcache.index import KVIndex
from llmd_kserve.kvcache.subscriber import KVEventSubscriber
from tests.real_vllm.conftest import BLOCK, RealStack, held_blocks, router_over, token_ids, wait_for

pytestmark = [pytest.mark.real_vllm, pytest.mark.timeout(900)]


async def _complete(session: aiohttp.ClientSession, url: str, prompt: object, model: str) -> dict[str, Any]:
    async with session.post(f"{url}/v1/completions", json={"model": model, "prompt": prompt, "max_tokens": 1}) as r:
        assert r.status == 200, await r.text()
        answer: dict[str, Any] = await r.json()
        return answer


async def test_stored_removed_and_cleared_blocks_reach_the_index(vllm_up: RealStack, tiny_model_dir: Path) -> None:
    rng = random.Random(11)
    engine, model = vllm_up.engine_urls[0], vllm_up.model
    async with router_over(vllm_up.endpoints, tiny_model_dir) as router, aiohttp.ClientSession() as s:
        index = router.state.index
        # three prompts of 6,016 tokens (188 blocks) each: together more than the 512-block cache, so storing the
        # third evicts cached blocks of the first
        prompts = [token_ids(188 * BLOCK, rng) for _ in range(3)]
        removed_before = index.stats().blocks_removed
        await _complete(s, engine, prompts[0], model)
        await wait_for(lambda: held_blocks(router.state, engine, prompts[0]) == 188, "first prompt stored")
        for p in prompts[1:]:
            await _complete(s, engine, p, model)
        await wait_for(lambda: held_blocks(router.state, engine, prompts[2]) == 188, "third prompt stored")
        await wait_for(lambda: index.stats().blocks_removed - removed_before >= 3 * 188 - 512,
                       "the evicted blocks removed")
        assert held_blocks(router.state, engine, prompts[0]) < 188
        # the engine agrees: what the index still says it holds of the first prompt is what it reports cached
        held = held_blocks(router.state, engine, prompts[0])
        again = await _complete(s, engine, prompts[0], model)
        assert again["usage"]["prompt_tokens_details"]["cached_tokens"] == held * BLOCK

        clears = index.stats().clears
        async with s.post(f"{engine}/reset_prefix_cache") as r:
            assert r.status == 200
        poke = token_ids(2 * BLOCK, rng)
        await _complete(s, engine, poke, model)  # the engine's next step publishes AllBlocksCleared
        await wait_for(lambda: index.stats().clears > clears, "AllBlocksCleared applied")
        await wait_for(lambda: held_blocks(router.state, engine, poke) == 2, "the block after the reset stored")
        assert all(held_blocks(router.state, engine, p) == 0 for p in prompts)
        async with s.get(f"{router.url}/debug/endpoints") as r:
            page = await r.json()
        assert page["index_keys"] == len(index) > 0
        metrics = await (await s.get(f"{router.url}/metrics")).text()
        assert f'llmd_router_kv_events_blocks_total{{endpoint="{engine}"}}' in metrics


async def test_events_missed_while_the_subscriber_was_down_are_replayed(vllm_up: RealStack,
                                                                       tiny_model_dir: Path) -> None:
    rng = random.Random(12)
    engine, model = vllm_up.engine_urls[1], vllm_up.model
    spec = parse_endpoint_url(vllm_up.endpoints[1])
    async with router_over(vllm_up.endpoints, tiny_model_dir) as router, aiohttp.ClientSession() as s, \
            KVEventSubscriber(KVIndex()) as witness:
        # a second subscriber witnesses when the engine has published (vLLM publishes from a thread of its own,
        # possibly after the answer): then the router's subscriber has surely missed it
        witness.add(spec)

        async def witnessed() -> bool:
            if witness.stats()[engine].messages:
                return True
            await _complete(s, engine, token_ids(BLOCK + 1, rng), model)
            return False

        await wait_for(witnessed, "the witness subscribed")
        subscriber = router.state.subscriber
        await subscriber.stop()  # the router's subscriber goes away; the engine goes on publishing
        missed = token_ids(5 * BLOCK, rng)
        await _complete(s, engine, missed, model)
        keys = block_keys(missed, BLOCK, witness.index.seed)
        await wait_for(lambda: witness.index.match(keys, [spec.id])[spec.id] == 5, "the missed blocks published")
        before = subscriber.stats()[engine]
        await subscriber.start()
        assert held_blocks(router.state, engine, missed) == 0

        async def replayed() -> bool:  # a new event shows the gap in the sequence; the replay socket fills it
            if subscriber.stats()[engine].replayed > before.replayed:
                return True
            await _complete(s, engine, token_ids(BLOCK + 1, rng), model)
            return False

        await wait_for(replayed, "the missed events replayed")
        after = subscriber.stats()[engine]
        assert after.gaps > before.gaps and after.replay_failures == 0
        assert held_blocks(router.state, engine, missed) == 5
