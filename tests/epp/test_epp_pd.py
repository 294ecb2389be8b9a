"""P/D through the gateway: the EPP picks decode (the sidecar) and prefill, the sidecar runs the NIXL handshake;
prefill addresses outside the pool are refused."""

from __future__ import annotations

import asyncio
import contextlib

import httpx
import pytest

from llmd_kserve.engine_sim.server import running_engine
from llmd_kserve.epp.protocol import PREFILL_HEADER
from llmd_kserve.epp.sidecar import running_sidecar
from llmd_kserve.stack.procs import free_port as _free_port
from tests.epp.gateway import gateway

pytestmark = pytest.mark.slow
MODEL = "llama-8b-shape"


async def test_pd_through_envoy_with_sidecar(tmp_path):
    async with contextlib.AsyncExitStack() as stack:
        pre = await stack.enter_async_context(running_engine(
            model=MODEL, time_scale=0.02, role="prefill", kv_events_endpoint=f"tcp://127.0.0.1:{_free_port()}"))
        dec = await stack.enter_async_context(running_engine(
            model=MODEL, time_scale=0.02, role="decode", seed=1, kv_events_endpoint=f"tcp://127.0.0.1:{_free_port()}"))
        side = await stack.enter_async_context(running_sidecar(dec.url, [pre.url]))
        eps = [f"{pre.url}#role=prefill&kv={pre.kv_events_endpoint}",
               f"{side.url}#role=decode&kv={dec.kv_events_endpoint}"]
        gw = await stack.enter_async_context(gateway(tmp_path, eps, config="pd-always"))
        async with httpx.AsyncClient(base_url=gw.url, timeout=30) as c:
            for _ in range(50):  # the health filter needs a first scrape of both (the sidecar relays /metrics)
                if all(not s.metrics.stale for s in gw.epp.state.endpoint_states()):
                    break
                await c.get(side.url + "/metrics")
                await asyncio.sleep(0.05)
            body = {"model": MODEL, "prompt": "a long shared document " * 60, "max_tokens": 6}
            r = await c.post("/v1/completions", json=body, headers={PREFILL_HEADER: "127.0.0.1:1"})
            assert r.status_code == 200, r.text
            assert r.json()["usage"]["completion_tokens"] == 6
            r = await c.post("/v1/chat/completions", json={
                "model": MODEL, "messages": [{"role": "user", "content": "hello " * 100}], "max_tokens": 4,
                "stream": True})
            assert r.status_code == 200 and r.text.rstrip().endswith("data: [DONE]")
            # straight to the sidecar, bypassing the gateway: a prefill address outside the pool is refused
            r = await c.post(side.url + "/v1/completions", json=body, headers={PREFILL_HEADER: "127.0.0.1:1"})
            assert r.status_code == 403
            metrics = (await c.get(side.url + "/metrics")).text
        decisions = gw.epp.state.decisions.recent()
        assert [d["prefill"] for d in decisions] == [pre.url, pre.url]
        assert [d["target"] for d in decisions] == [side.url, side.url]
        assert 'llmd_sidecar_pd_requests_total{mode="disaggregated"} 2.0' in metrics  # the refused one is not
        assert "llmd_sidecar_pd_fallbacks_total{" not in metrics  # no prefill hop failed
        assert "vllm:num_requests_waiting" in metrics  # the decode engine's own metrics, relayed
