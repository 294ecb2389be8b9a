"""Response mode ``none`` through a real Envoy: two gRPC round trips per request (the request headers answered
at once, the pick as the answer to the buffered body) and nothing of the response. The request is still charged
to its endpoint while its answer streams, and released when Envoy closes the stream at the end of the exchange."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from llmd_kserve.engine_sim.server import running_engine
from llmd_kserve.epp.envoy import EnvoyConfig
from tests.epp.gateway import gateway

pytestmark = pytest.mark.slow


def _inflight(gw) -> dict:
    producers = gw.epp.server.picker.director.rt.scheduler.current.producers
    load = next(p for p in producers if p.type == "inflight-load-producer")._load
    return {ep: v for ep, v in load.items() if v != (0, 0)}


async def test_load_held_while_the_answer_streams_and_released_at_its_end(tmp_path):
    async with running_engine(time_scale=0.2) as a, running_engine(time_scale=0.2) as b, \
            gateway(tmp_path, [a.url, b.url], config="load-only", response_mode="none") as gw, \
            httpx.AsyncClient(base_url=gw.url, timeout=60) as c:
        events = 0
        async with c.stream("POST", "/v1/completions", json={
                "prompt": "story", "max_tokens": 60, "ignore_eos": True, "stream": True}) as r:
            assert r.status_code == 200
            target = r.headers["x-llmd-endpoint"]  # Envoy's route, from the pick's metadata
            async for line in r.aiter_lines():
                events += line.startswith("data: {")
                if events == 5:
                    assert list(_inflight(gw)) == [target]  # charged while it streams
                    assert gw.epp.server.service.active == 1  # the ext_proc stream is still open
        assert events == 60
        for _ in range(100):  # Envoy closes the stream once the exchange is over
            if not _inflight(gw):
                break
            await asyncio.sleep(0.05)
        assert not _inflight(gw)
        decision = gw.epp.state.decisions.recent()[-1]
        assert decision["target"] == target and decision["outcome"] == "ok" and decision["status"] is None


def test_none_mode_buffers_the_request_and_sends_nothing_of_the_response():
    listener = EnvoyConfig(epp="127.0.0.1:9002", response_mode="none", max_body_bytes=1 << 24).bootstrap()[
        "static_resources"]["listeners"][0]
    ext = next(f for f in listener["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"]
               if f["name"] == "envoy.filters.http.ext_proc")["typed_config"]
    assert ext["processing_mode"] == {
        "request_header_mode": "SEND", "response_header_mode": "SKIP", "request_body_mode": "BUFFERED",
        "response_body_mode": "NONE", "request_trailer_mode": "SKIP", "response_trailer_mode": "SKIP"}
    assert listener["per_connection_buffer_limit_bytes"] == 1 << 24  # the whole body is buffered
