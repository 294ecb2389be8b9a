"""SLO admission behind Envoy (real Envoy, real EPP, simulated engines over real sockets): under overload a
sheddable request no endpoint can serve within its TTFT target is answered 429 with ``Retry-After`` by the EPP as an
immediate response, a priority-0 one reaches an engine, and the EPP's metrics count both per band."""

from __future__ import annotations

import asyncio
import re

import httpx

from llmd_kserve.engine_sim.server import running_engine
from llmd_kserve.epp.picker import Saturation
from llmd_kserve.epp.protocol import REASON_HEADER
from llmd_kserve.epp.server import EppSettings
from tests.epp.gateway import completion, gateway, overload, require_envoy

MODEL = "llama-8b-shape"


async def test_a_sheddable_request_is_shed_by_the_epp_under_overload(tmp_path):
    require_envoy()
    # the pool-saturation check (queues, KV) would shed the sheddable request first: only the admitter decides here
    never_saturated = EppSettings(response_mode="full", saturation=Saturation(queue_threshold=10**6, kv_threshold=1.0))
    async with (running_engine(port=0, host="127.0.0.1", model=MODEL, seed=0) as e0,
                running_engine(port=0, host="127.0.0.1", model=MODEL, seed=1) as e1,
                gateway(tmp_path, [e0.url, e1.url], config="default", router={"profile": "cpu-tiny-llama"},
                        epp=never_saturated) as gw,
                httpx.AsyncClient(base_url=gw.url, timeout=60) as c):
        state = gw.epp.state

        # 40 prompts of ~4,000 tokens (~0.8 s of prefill each on the EPP's CPU latency profile), long answers
        load = await overload(c, gw.epp, MODEL)
        slo = {"x-llm-d-slo-ttft-ms": "500"}
        shed = await c.post("/v1/completions", json=completion(MODEL, "a sheddable question"), headers={**slo, "x-llmd-priority": "-1"})
        assert shed.status_code == 429, shed.text
        assert int(shed.headers["Retry-After"]) >= 1 and shed.headers[REASON_HEADER] == "slo_unmet"
        assert shed.json()["error"]["type"] == "RateLimitError"
        kept = await c.post("/v1/completions", json=completion(MODEL, "an important question"), headers={**slo, "x-llmd-priority": "0"})
        assert kept.status_code == 200, kept.text
        bad = await c.post("/v1/completions", json=completion(MODEL, "x"), headers={"x-llmd-priority": "urgent"})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "x-llmd-priority"
        for task in load:
            task.cancel()
        await asyncio.gather(*load, return_exceptions=True)
        text = state.metrics.render()[0].decode()
        assert re.search(r'llmd_epp_slo_requests_total\{band="-1",outcome="shed"\} 1\.0', text), text
        assert re.search(r'llmd_epp_slo_requests_total\{band="0",outcome="admitted"\} 1\.0', text), text
