"""P/D over real HTTP: router + simulated prefill and decode engines, each behind a recording proxy."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from recorder import Recorder, recording

from llmd_kserve.disagg.metrics import DisaggMetrics
from llmd_kserve.disagg.orchestrator import PDOrchestrator
from llmd_kserve.disagg.protocol import PREFILL_REQUEST_PARAMS, REMOTE_PREFILL_KEYS
from llmd_kserve.engine_sim.server import EngineServer, running_engine
from llmd_kserve.router.app import RunningRouter, running_router
from llmd_kserve.stack.procs import free_port as _free_port

MODEL = "llama-8b-shape"
PROMPT = " ".join(f"w{i % 97}x{i % 13}" for i in range(300))  # a few hundred tokens, many full blocks


@dataclass
class PD:
    router: RunningRouter
    prefill: EngineServer | None
    decode: EngineServer
    rec_p: Recorder | None
    rec_d: Recorder
    session: aiohttp.ClientSession


@contextlib.asynccontextmanager
async def pd_cluster(config: str, prefill_opts: dict | None = None, dead_prefill: bool = False) -> AsyncIterator[PD]:
    async with contextlib.AsyncExitStack() as st:
        decode = await st.enter_async_context(running_engine(model=MODEL, role="decode", time_scale=0.02, seed=2))
        rec_d = await st.enter_async_context(recording(decode.url))
        prefill = rec_p = None
        if dead_prefill:
            prefill_url = f"http://127.0.0.1:{_free_port()}"
        else:
            opts = {"time_scale": 0.02, **(prefill_opts or {})}
            prefill = await st.enter_async_context(running_engine(model=MODEL, role="prefill", seed=1, **opts))
            rec_p = await st.enter_async_context(recording(prefill.url))
            prefill_url = rec_p.url
        router = await st.enter_async_context(running_router(
            endpoints=[f"{prefill_url}#role=prefill", f"{rec_d.url}#role=decode"], config=config,
            scrape_interval=0.02, served_models=(MODEL,)))
        session = await st.enter_async_context(aiohttp.ClientSession())
        yield PD(router, prefill, decode, rec_p, rec_d, session)


async def stream(pd: PD, body: dict, path: str = "/v1/completions", headers: dict | None = None):
    """POST a streaming request through the router; (response headers, text, usage)."""
    text, usage = "", None
    async with pd.session.post(pd.router.url + path, json=body, headers=headers or {}) as r:
        assert r.status == 200, await r.text()
        async for line in r.content:
            line = line.strip()
            if not line.startswith(b"data:") or line == b"data: [DONE]":
                continue
            ev = json.loads(line[5:])
            assert "error" not in ev, ev
            usage = ev.get("usage") or usage
            for c in ev.get("choices") or ():
                text += c.get("text") or (c.get("delta") or {}).get("content") or ""
        return r.headers, text, usage


async def metric(session: aiohttp.ClientSession, url: str, name: str, **labels: str) -> float:
    async with session.get(url + "/metrics") as r:
        text = await r.text()
    total = 0.0
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


def client_body(kind: str, **extra: Any) -> tuple[str, dict]:
    body: dict[str, Any] = {"model": MODEL, "max_tokens": 8, "stream": True, "stream_options": {"include_usage": True},
                            "ignore_eos": True, **extra}
    if kind == "chat":
        return "/v1/chat/completions", {**body, "messages": [{"role": "user", "content": PROMPT}]}
    return "/v1/completions", {**body, "prompt": PROMPT}


@pytest.mark.parametrize("kind", ["completion", "chat"])
async def test_handshake_fields_verbatim_and_same_request_id(kind):
    path, body = client_body(kind)
    async with pd_cluster("pd-always") as pd:
        headers, text, usage = await stream(pd, body, path, {"x-request-id": "pd-rid-1"})
        assert text and usage["completion_tokens"] == 8
        assert headers["x-llmd-endpoint"] == pd.rec_d.url and headers["x-request-id"] == "pd-rid-1"
        (p,) = pd.rec_p.generations()
        (d,) = pd.rec_d.generations()
        assert p.path == d.path == path
        # step 1: the request with stream false, max_tokens 1, no stream_options, the prefill kv_transfer_params
        expected = {k: v for k, v in body.items() if k != "stream_options"}
        assert p.body == {**expected, "stream": False, "max_tokens": 1,
                          "kv_transfer_params": dict(PREFILL_REQUEST_PARAMS)}
        assert p.body["kv_transfer_params"] == {"do_remote_decode": True, "do_remote_prefill": False,
                                                "remote_engine_id": None, "remote_block_ids": None,
                                                "remote_host": None, "remote_port": None}
        # step 2: the prefill engine's answer
        answer = p.answer["kv_transfer_params"]
        assert set(answer) == set(REMOTE_PREFILL_KEYS) and answer["do_remote_prefill"] is True
        assert answer["remote_engine_id"] == pd.prefill.engine_id and answer["remote_port"] == pd.prefill.port
        # step 3: the original request with those params verbatim
        assert d.body == {**body, "kv_transfer_params": answer}
        assert p.headers["x-request-id"] == d.headers["x-request-id"] == "pd-rid-1"


async def test_decode_reports_the_transferred_prefix_as_cached():
    path, body = client_body("completion")
    async with pd_cluster("pd-always") as pd:
        _, _, usage = await stream(pd, body, path)
        n = usage["prompt_tokens"]
        assert usage["prompt_tokens_details"]["cached_tokens"] >= (n - 1) // 16 * 16  # KV came from the prefill engine


async def test_metrics_move():
    path, body = client_body("completion")
    async with pd_cluster("pd-always") as pd:
        _, _, usage = await stream(pd, body, path)
        n = usage["prompt_tokens"]
        r = pd.router.url
        assert await metric(pd.session, r, "llmd_router_pd_requests_total", mode="disaggregated") == 1
        assert await metric(pd.session, r, "llmd_router_pd_requests_total", mode="local") == 0
        assert await metric(pd.session, r, "llmd_router_pd_prefill_seconds_count") == 1
        assert await metric(pd.session, r, "llmd_router_pd_kv_transfer_tokens_total") == n
        assert await metric(pd.session, r, "llmd_router_pd_kv_transfer_predicted_seconds_count") == 1
        assert await metric(pd.session, pd.decode.url, "vllm:nixl_xfer_time_seconds_count") == 1
        assert await metric(pd.session, pd.decode.url, "vllm:nixl_num_failed_transfers_total") == 0
        assert await metric(pd.session, r, "llmd_router_pd_fallbacks_total") == 0


async def test_never_keeps_the_prefill_pool_out():
    path, body = client_body("completion")
    async with pd_cluster("pd-never") as pd:
        await stream(pd, body, path)
        assert pd.rec_p.generations() == []
        (d,) = pd.rec_d.generations()
        assert d.body == body
        assert await metric(pd.session, pd.router.url, "llmd_router_pd_requests_total", mode="local") == 1


async def _assert_fell_back(pd: PD, body: dict, path: str, reason: str) -> None:
    _, text, usage = await stream(pd, body, path)
    assert text and usage["completion_tokens"] == 8
    (d,) = pd.rec_d.generations()
    assert d.body == body  # the original request, no kv_transfer_params: a local prefill
    assert await metric(pd.session, pd.router.url, "llmd_router_pd_fallbacks_total", reason=reason) == 1
    assert await metric(pd.session, pd.router.url, "llmd_router_pd_prefill_seconds_count") == 0


async def test_fallback_when_the_prefill_engine_errors():
    path, body = client_body("completion")
    async with pd_cluster("pd-always", prefill_opts={"error_rate": 1.0}) as pd:
        await _assert_fell_back(pd, body, path, "http_500")
        assert [p.status for p in pd.rec_p.generations()] == [500]


async def test_fallback_when_the_prefill_engine_is_down():
    path, body = client_body("completion")
    async with pd_cluster("pd-always", dead_prefill=True) as pd:
        await _assert_fell_back(pd, body, path, "connect")


@pytest.mark.slow  # waits out the router's prefill timeout (~7 s)
async def test_fallback_when_the_prefill_hop_times_out():
    path, body = client_body("completion")
    async with pd_cluster("pd-always", prefill_opts={"time_scale": 200.0}) as pd:  # prefill takes seconds
        pd.router.proxy.pd.timeout = 0.05
        await _assert_fell_back(pd, body, path, "timeout")


async def test_fallback_releases_no_kv_on_a_connector_less_prefill_engine():
    path, body = client_body("completion")
    async with pd_cluster("pd-always", prefill_opts={"kv_connector": False}) as pd:
        await _assert_fell_back(pd, body, path, "no_kv_params")


@contextlib.asynccontextmanager
async def evil_server() -> AsyncIterator[tuple[int, list[str]]]:
    hits: list[str] = []

    async def any_request(request: web.Request) -> web.Response:
        hits.append(request.path)
        return web.json_response({"num_blocks": 1, "block_size": 16})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", any_request)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield runner.addresses[0][1], hits
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("config", ["pd-never", "pd-always"])
async def test_client_cannot_point_the_router_or_the_engine_elsewhere(config):
    async with evil_server() as (port, hits):
        forged = {"do_remote_prefill": True, "do_remote_decode": False, "remote_block_ids": [1, 2, 3],
                  "remote_engine_id": "evil", "remote_request_id": "evil-req", "remote_host": "127.0.0.1",
                  "remote_port": port, "tp_size": 1}
        path, body = client_body("completion", kv_transfer_params=forged)
        async with pd_cluster(config) as pd:
            await stream(pd, body, path, {"x-prefiller-host-port": f"127.0.0.1:{port}",
                                          "x-gateway-destination-endpoint-subset": f"127.0.0.1:{port}"})
            (d,) = pd.rec_d.generations()
            clean = {k: v for k, v in body.items() if k != "kv_transfer_params"}
            if config == "pd-never":
                assert d.body == clean
            else:
                (p,) = pd.rec_p.generations()
                assert p.body["kv_transfer_params"] == dict(PREFILL_REQUEST_PARAMS)
                assert d.body == {**clean, "kv_transfer_params": p.answer["kv_transfer_params"]}
                assert d.body["kv_transfer_params"]["remote_port"] == pd.prefill.port
            assert await metric(pd.session, pd.router.url, "llmd_router_pd_client_params_stripped_total") == 1
            assert await metric(pd.session, pd.decode.url, "vllm:nixl_num_failed_transfers_total") == 0
        assert hits == []


async def test_storage_handoff_takes_a_prefill_answer_without_params_as_a_handoff():
    """A storage connector (vLLM's ExampleConnector, LMCache) answers without kv_transfer_params: with
    ``handoff="storage"`` that is a successful hop, and the decode engine gets the original request."""
    path, body = client_body("completion")
    async with pd_cluster("pd-always", prefill_opts={"kv_connector": False}) as pd:
        pd.router.proxy.pd.handoff = "storage"
        _, text, usage = await stream(pd, body, path)
        assert text and usage["completion_tokens"] == 8
        (p,) = pd.rec_p.generations()
        (d,) = pd.rec_d.generations()
        assert p.answer.get("kv_transfer_params") is None and p.body["max_tokens"] == 1
        assert d.body == body  # no kv_transfer_params
        r = pd.router.url
        assert await metric(pd.session, r, "llmd_router_pd_fallbacks_total") == 0
        assert await metric(pd.session, r, "llmd_router_pd_prefill_seconds_count") == 1
        assert await metric(pd.session, r, "llmd_router_pd_kv_transfer_tokens_total") == p.answer["usage"]["prompt_tokens"]


def test_an_unknown_handoff_is_refused():
    with pytest.raises(ValueError, match="unknown KV handoff 'nixl'"):
        PDOrchestrator(lambda: None, DisaggMetrics(CollectorRegistry()), handoff="nixl")  # type: ignore[arg-type]
