"""The EPP exports the router's autoscaling signals under the same names (real Envoy, real EPP, simulated engines):
its /metrics shows the queue per band, the endpoints (and llm-d's ``inference_pool_*`` gauges), and a TTFT headroom
that is the target while idle and goes negative under overload."""

from __future__ import annotations

import asyncio

import httpx

from llmd_kserve.engine_sim.server import running_engine
from llmd_kserve.epp.picker import Saturation
from llmd_kserve.epp.server import EppSettings
from tests.epp.gateway import gateway, overload, require_envoy
from tests.router.test_router_autoscaling_metrics import gauge

MODEL = "llama-8b-shape"


async def test_the_epp_exports_the_autoscaling_signals_and_headroom_goes_negative_under_overload(tmp_path):
    require_envoy()
    never_saturated = EppSettings(response_mode="full",
                                  saturation=Saturation(queue_threshold=10**6, kv_threshold=1.0))
    async with (running_engine(port=0, host="127.0.0.1", model=MODEL, seed=0) as e0,
                running_engine(port=0, host="127.0.0.1", model=MODEL, seed=1) as e1,
                gateway(tmp_path, [e0.url, e1.url], config="default",
                        router={"profile": "cpu-tiny-llama", "ttft_slo_s": 0.5, "pool_name": "llmd-pool"}, epp=never_saturated) as gw,
                httpx.AsyncClient(base_url=gw.url, timeout=60) as c,
                httpx.AsyncClient(base_url=gw.epp.metrics_url, timeout=10) as m):

        async def scrape() -> str:
            r = await m.get("/metrics")
            assert r.status_code == 200
            return r.text

        for _ in range(200):
            text = await scrape()
            if gauge(text, "llmd_router_endpoints_ready", 'role="both"') == 2:
                break
            await asyncio.sleep(0.02)
        assert gauge(text, "llmd_router_endpoints_ready", 'role="both"') == 2
        assert gauge(text, "llmd_router_queue_depth", 'band="0"') == 0
        assert gauge(text, "llmd_router_ttft_slo_seconds") == 0.5
        assert gauge(text, "llmd_router_ttft_headroom_seconds") == 0.5  # idle
        assert gauge(text, "llmd_router_kv_usage_ratio", 'role="both"') is not None
        # llm-d's pool gauges, under the InferencePool's name
        assert gauge(text, "inference_pool_ready_pods", 'name="llmd-pool"') == 2
        assert gauge(text, "inference_pool_average_queue_size", 'name="llmd-pool"') == 0

        load = await overload(c, gw.epp, MODEL)
        heavy = gauge(await scrape(), "llmd_router_ttft_headroom_seconds")
        assert heavy is not None and heavy < 0, heavy
        for task in load:
            task.cancel()
        await asyncio.gather(*load, return_exceptions=True)
