"""The Gateway API path on real engines: a real Envoy whose ext_proc Endpoint Picker (``llmd_kserve.epp``, in this
process) routes to the session's vLLM replicas - plain and streamed answers, and a shared prefix sent to the
replica that holds it."""

from __future__ import annotations

import json
import random
from pathlib import Path

import httpx
import pytest

from tests.epp.gateway import gateway, require_envoy
from tests.real_vllm.conftest import BLOCK, RealStack, held_blocks, token_ids, wait_for, wait_live

pytestmark = [pytest.mark.real_vllm, pytest.mark.timeout(900)]


async def test_envoy_and_the_epp_route_to_real_engines(vllm_up: RealStack, tiny_model_dir: Path,
                                                       tmp_path: Path) -> None:
    require_envoy()
    rng = random.Random(21)
    engines, model = vllm_up.engine_urls, vllm_up.model
    async with gateway(tmp_path, vllm_up.endpoints, config="default", router={"tokenizer": str(tiny_model_dir)}) as gw:
        state = gw.epp.state
        await wait_live(state, engines, model)
        async with httpx.AsyncClient(base_url=gw.url, timeout=120) as c:
            r = await c.post("/v1/completions", json={"model": model, "prompt": "Hello Envoy", "max_tokens": 4,
                                                      "ignore_eos": True})
            assert r.status_code == 200, r.text
            assert r.json()["usage"]["completion_tokens"] == 4 and "prompt_tokens_details" in r.json()["usage"]
            assert r.headers["x-llmd-endpoint"] in engines
            chat = {"model": model, "messages": [{"role": "user", "content": "Stream, please"}], "max_tokens": 6,
                    "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}}
            async with c.stream("POST", "/v1/chat/completions", json=chat) as r:
                assert r.status_code == 200
                events = [ln[6:] async for ln in r.aiter_lines() if ln.startswith("data: ")]
            assert events[-1] == "[DONE]" and json.loads(events[-2])["usage"]["completion_tokens"] == 6

            prefix = token_ids(8 * BLOCK, rng)  # cached on the second replica only
            async with httpx.AsyncClient(timeout=120) as direct:
                r = await direct.post(f"{engines[1]}/v1/completions",
                                      json={"model": model, "prompt": prefix, "max_tokens": 1})
                assert r.status_code == 200
            await wait_for(lambda: held_blocks(state, engines[1], prefix) == 8, "the prefix indexed")
            for _ in range(2):
                r = await c.post("/v1/completions", json={"model": model, "prompt": prefix + token_ids(40, rng),
                                                          "max_tokens": 1})
                assert r.status_code == 200 and r.headers["x-llmd-endpoint"] == engines[1]
                assert r.json()["usage"]["prompt_tokens_details"]["cached_tokens"] >= 8 * BLOCK
        await wait_for(lambda: [d["outcome"] for d in state.decisions.recent()] == ["ok"] * 4,
                       "four decisions answered ok")  # Envoy reports the end of each response to the EPP
