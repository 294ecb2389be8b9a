"""Black-box Endpoint Picker Protocol suite: a real Envoy in front of our EPP, observed from the client, the
upstreams (what reached them) and Envoy's access log (the pick as header and as dynamic metadata)."""

from __future__ import annotations

import asyncio
import hashlib

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from llmd_kserve.control.endpoints import parse_endpoints
from llmd_kserve.epp.envoy import EnvoyConfig
from llmd_kserve.epp.picker import PRIORITY_HEADER, Saturation
from llmd_kserve.epp.protocol import EXT_PROC_SERVICE, REASON_HEADER, SUBSET_KEY, SUBSET_NAMESPACE
from llmd_kserve.epp.run import expand_target_ports
from llmd_kserve.epp.server import EppSettings
from tests.epp.gateway import gateway
from tests.epp.upstream import running_upstream, sse_body

pytestmark = pytest.mark.slow
BODY = {"model": "m", "prompt": "hello", "max_tokens": 5}


def _hp(url: str) -> str:
    return url.split("//", 1)[1]


def subset_from_header(header: str = "x-test-subset") -> dict:
    """header_to_metadata: a request header becomes the subset hint as one comma-separated string."""
    return {"name": "subset-from-header", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.header_to_metadata.v3.Config",
        "request_rules": [{"header": header, "remove": True, "on_header_present": {
            "metadata_namespace": SUBSET_NAMESPACE, "key": SUBSET_KEY, "type": "STRING"}}]}}


def subset_list(items: list[str]) -> dict:
    """set_metadata: the subset hint as a list value (how a control plane writes it)."""
    return {"name": "subset-list", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.set_metadata.v3.Config",
        "metadata": [{"metadata_namespace": SUBSET_NAMESPACE, "value": {SUBSET_KEY: items}}]}}


@pytest.mark.parametrize("mode", ["full", "none"])
async def test_pick_as_header_and_metadata_agree_and_is_dialled(tmp_path, mode):
    async with running_upstream() as a, running_upstream() as b, \
            gateway(tmp_path, [a.url, b.url], response_mode=mode) as gw:
        async with httpx.AsyncClient(base_url=gw.url, timeout=20) as c:
            for i in range(6):
                path = "/v1/chat/completions" if i % 2 else "/v1/completions"
                body = {**BODY, "messages": [{"role": "user", "content": "hi"}]} if i % 2 else BODY
                r = await c.post(path, json=body, headers={"x-gateway-destination-endpoint": "127.0.0.1:1"})
                assert r.status_code == 200, r.text
                assert r.json()["destination"] == f"127.0.0.1:{r.json()['port']}"  # the client's header was stripped
        assert len(a.seen) == len(b.seen) == 3  # round-robin over both
        lines = gw.log_lines(6)
        assert len(lines) == 6
        for line in lines:
            assert line["header"] == line["metadata"] == line["upstream"], line


@pytest.mark.parametrize("mode", ["full", "none"])
async def test_subset_as_string_restricts_empty_and_ineligible_are_503(tmp_path, mode):
    async with running_upstream() as a, running_upstream() as b, \
            gateway(tmp_path, [a.url, b.url], response_mode=mode, extra_filters=(subset_from_header(),)) as gw:
        async with httpx.AsyncClient(base_url=gw.url, timeout=20) as c:
            for _ in range(4):
                r = await c.post("/v1/completions", json=BODY, headers={"x-test-subset": f"{_hp(b.url)} , 10.9.9.9:80"})
                assert r.status_code == 200 and r.json()["port"] == b.port
            r = await c.post("/v1/completions", json=BODY, headers={"x-test-subset": ", ,"})
            assert r.status_code == 503 and r.headers[REASON_HEADER] == "subset_empty"
            r = await c.post("/v1/completions", json=BODY, headers={"x-test-subset": "10.9.9.9:80"})
            assert r.status_code == 503 and r.headers[REASON_HEADER] == "subset_ineligible"
            assert r.json()["error"]["code"] == 503
        assert not a.seen


async def test_subset_as_list(tmp_path):
    async with running_upstream() as a, running_upstream() as b, \
            gateway(tmp_path, [a.url, b.url], extra_filters=(subset_list(["10.9.9.9:80", _hp(a.url)]),)) as gw:
        async with httpx.AsyncClient(base_url=gw.url, timeout=20) as c:
            ports = [(await c.post("/v1/completions", json=BODY)).json()["port"] for _ in range(4)]
        assert ports == [a.port] * 4 and not b.seen


@pytest.mark.parametrize("mode", ["full", "none"])
async def test_shed_is_429_and_no_endpoint_is_503_each_with_reason(tmp_path, mode):
    epp = EppSettings(response_mode=mode, saturation=Saturation(queue_threshold=5))
    async with running_upstream() as a, gateway(tmp_path, [a.url], epp=epp) as gw:
        a.waiting = 10
        await asyncio.sleep(0.4)  # a few scrapes
        async with httpx.AsyncClient(base_url=gw.url, timeout=20) as c:
            r = await c.post("/v1/completions", json=BODY, headers={PRIORITY_HEADER: "-1"})
            assert r.status_code == 429 and r.headers[REASON_HEADER] == "saturated"
            assert r.json()["error"]["type"] == "RateLimitError"
            r = await c.post("/v1/completions", json=BODY)  # not sheddable: served even when saturated
            assert r.status_code == 200
            a.waiting = 0
            await asyncio.sleep(0.4)
            r = await c.post("/v1/completions", json=BODY, headers={PRIORITY_HEADER: "-1"})
            assert r.status_code == 200
            r = await c.post("/v1/completions", json={"prompt": 3})
            assert r.status_code == 400 and r.headers[REASON_HEADER] == "invalid_request"
            gw.epp.state.set_endpoints([])
            r = await c.post("/v1/completions", json=BODY)
            assert r.status_code == 503 and r.headers[REASON_HEADER] == "no_ready_endpoint"
        assert len(a.seen) == 2


@pytest.mark.parametrize("mode", ["full", "headers", "none"])
async def test_sse_and_json_unchanged_and_load_released(tmp_path, mode):
    async with running_upstream() as a, gateway(tmp_path, [a.url], config="load-only", response_mode=mode) as gw:
        picker = gw.epp.server.picker
        async with httpx.AsyncClient(base_url=gw.url, timeout=20) as c, \
                httpx.AsyncClient(base_url=a.url, timeout=20) as direct:
            streamed = await c.post("/v1/completions", json={**BODY, "stream": True})
            assert streamed.status_code == 200 and streamed.content == sse_body()
            assert streamed.headers["content-type"].startswith("text/event-stream")
            assert streamed.headers["x-llmd-endpoint"] == a.url  # from the EPP (full) or Envoy's route (headers)
            via = await c.post("/v1/completions", json=BODY)
            ref = await direct.post("/v1/completions", json=BODY)
            assert {k: v for k, v in via.json().items() if k != "destination"} == \
                   {k: v for k, v in ref.json().items() if k != "destination"}
        await asyncio.sleep(0.3)  # headers and none modes: load is released when Envoy ends the stream
        decisions = gw.epp.state.decisions.recent()
        assert [d["outcome"] for d in decisions] == ["ok", "ok"]
        inflight = picker.director.rt.scheduler.current.producers  # the in-flight producer's books are empty again
        loads = [p._load for p in inflight if p.type == "inflight-load-producer"]
        assert loads and all(not any(v != (0, 0) for v in load.values()) for load in loads)
        reported = [d["reported_cached_tokens"] for d in decisions]
        assert reported == ([64, 32] if mode == "full" else [None, None])  # usage is only seen in full mode
        # headers mode: Envoy sends no response headers (two messages fewer), so no status is recorded
        assert [d["status"] for d in decisions] == ([200, 200] if mode == "full" else [None, None])


def test_response_headers_are_sent_in_full_mode_and_on_request_in_headers_mode():
    def response_header_mode(**kw: object) -> str:
        hcm = EnvoyConfig(epp="127.0.0.1:9002", **kw).bootstrap()["static_resources"]["listeners"][0][
            "filter_chains"][0]["filters"][0]["typed_config"]
        ext = next(f for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.ext_proc")["typed_config"]
        assert ext["processing_mode"]["response_trailer_mode"] == "SEND"  # keeps the stream open to the end
        return ext["processing_mode"]["response_header_mode"]

    assert response_header_mode(response_mode="full") == "SEND"
    assert response_header_mode(response_mode="headers") == "SKIP"
    assert response_header_mode(response_mode="headers", response_headers=True) == "SEND"


@pytest.mark.parametrize("mode", ["full", "none"])
async def test_body_larger_than_one_chunk_arrives_intact(tmp_path, mode):
    prompt = "".join(f"word{i} " for i in range(40_000))  # ~1.1 MB with "user": many 62 KB chunks each way (full),
    # or one buffered body over Envoy's default 1 MiB buffer (none)
    async with running_upstream() as a, gateway(tmp_path, [a.url], response_mode=mode) as gw:
        async with httpx.AsyncClient(base_url=gw.url, timeout=30) as c:
            raw = httpx.Request("POST", "/", json={**BODY, "prompt": prompt, "user": "u" * 800_000}).content
            r = await c.post("/v1/completions", content=raw, headers={"content-type": "application/json"})
        assert r.status_code == 200, r.text
        assert len(raw) > 1 << 20
        assert r.json()["sha256"] == hashlib.sha256(raw).hexdigest() and r.json()["length"] == len(raw)


async def test_data_parallel_target_ports(tmp_path):
    async with running_upstream() as a, running_upstream() as b:
        pod = parse_endpoints([a.url])
        eps = expand_target_ports(pod, [a.port, b.port])
        assert [e.id for e in eps] == [a.url, b.url]
        async with gateway(tmp_path, eps, extra_filters=(subset_from_header(),)) as gw, \
                httpx.AsyncClient(base_url=gw.url, timeout=20) as c:
            for _ in range(4):  # a bare IP in the subset allows every port of that pod
                r = await c.post("/v1/completions", json=BODY, headers={"x-test-subset": "127.0.0.1"})
                assert r.status_code == 200
        assert len(a.seen) == len(b.seen) == 2


@pytest.mark.parametrize("fail_open", [True, False])
async def test_epp_down_fail_open_routes_fail_closed_refuses(tmp_path, fail_open):
    async with running_upstream() as a, running_upstream() as b, \
            gateway(tmp_path, [a.url], failure_mode_allow=fail_open, fallback=(_hp(b.url),)) as gw:
        async with httpx.AsyncClient(base_url=gw.url, timeout=20) as c:
            assert (await c.post("/v1/completions", json=BODY)).json()["port"] == a.port
            await gw.epp.server.stop(0)
            for _ in range(100):  # "down" = Envoy's gRPC health check has marked the EPP unhealthy: only then does a
                # new stream fail before the body went out (in FULL_DUPLEX_STREAMED the body is not kept for a retry)
                if gw.envoy.stats("cluster.epp.membership_healthy").get("cluster.epp.membership_healthy") == 0:
                    break
                await asyncio.sleep(0.05)
            r = await c.post("/v1/completions", json=BODY)
        if fail_open:
            assert r.status_code == 200, (r.status_code, r.headers, r.text)
            assert r.json()["port"] == b.port and r.json()["destination"] is None
        else:
            assert r.status_code >= 500 and not b.seen
            assert r.json()["error"]["code"] == r.status_code  # Envoy's own refusal, OpenAI-shaped
        assert len(a.seen) == 1


@pytest.mark.parametrize("mode", ["full", "headers"])
async def test_epp_gone_mid_stream_resets_the_stream(tmp_path, mode):
    """A stream cut because the EPP went away never ends like a complete answer: Envoy resets it (HTTP/1.1: the
    connection closes before the last chunk), so a client sees a transport error, in either streamed mode."""
    from llmd_kserve.engine_sim.server import running_engine

    async with running_engine(time_scale=0.5) as eng, \
            gateway(tmp_path, [eng.url], response_mode=mode, failure_mode_allow=True, fallback=(_hp(eng.url),)) as gw, \
            httpx.AsyncClient(base_url=gw.url, timeout=30) as c:
        events = 0
        with pytest.raises(httpx.RemoteProtocolError):
            async with c.stream("POST", "/v1/completions", json={
                    "prompt": "story", "max_tokens": 2_000, "ignore_eos": True, "stream": True}) as r:
                assert r.status_code == 200
                async for line in r.aiter_lines():
                    events += line.startswith("data: {")
                    if events == 20:
                        await gw.epp.server.stop(0)
                    assert line != "data: [DONE]"
        assert 20 <= events < 2_000


@pytest.mark.parametrize("fail_open", [True, False])
async def test_epp_gone_mid_answer_in_none_mode(tmp_path, fail_open):
    """Response mode none: the body went out whole, so a failing ext_proc stream falls under failure_mode_allow. With
    it, an answer under way finishes when the EPP goes away; without it, Envoy resets the answer."""
    from llmd_kserve.engine_sim.server import running_engine

    async with running_engine(time_scale=0.5) as eng, \
            gateway(tmp_path, [eng.url], response_mode="none", failure_mode_allow=fail_open) as gw, \
            httpx.AsyncClient(base_url=gw.url, timeout=60) as c:
        events, done = 0, False

        async def read() -> None:
            nonlocal events, done
            async with c.stream("POST", "/v1/completions", json={
                    "prompt": "story", "max_tokens": 200, "ignore_eos": True, "stream": True}) as r:
                assert r.status_code == 200
                async for line in r.aiter_lines():
                    events += line.startswith("data: {")
                    if events == 20:
                        await gw.epp.server.stop(0)
                    done = done or line == "data: [DONE]"

        if fail_open:
            await read()
            assert done and events == 200
        else:
            with pytest.raises(httpx.RemoteProtocolError):
                await read()
            assert 20 <= events < 200 and not done


async def test_grpc_health_services_and_drain(tmp_path):
    async with running_upstream() as a, gateway(tmp_path, [a.url]) as gw:
        async with grpc.aio.insecure_channel(gw.epp.grpc_address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)

            async def status(service: str) -> int:
                return (await stub.Check(health_pb2.HealthCheckRequest(service=service))).status

            serving = health_pb2.HealthCheckResponse.SERVING
            for service in ("", "liveness", "readiness", EXT_PROC_SERVICE):
                assert await status(service) == serving, service
            async with httpx.AsyncClient(base_url=gw.url, timeout=20) as c:
                assert (await c.post("/v1/completions", json=BODY)).status_code == 200
            assert await gw.epp.server.drain(timeout=2.0)
            assert await status("readiness") == health_pb2.HealthCheckResponse.NOT_SERVING
            assert await status(EXT_PROC_SERVICE) == health_pb2.HealthCheckResponse.NOT_SERVING
            assert await status("liveness") == serving
        async with httpx.AsyncClient(timeout=5) as c:
            r = await c.get(gw.epp.metrics_url + "/metrics")
            assert 'llmd_epp_verdicts_total{status="",verdict="picked"} 1.0' in r.text
            assert (await c.get(gw.epp.metrics_url + "/health")).status_code == 503  # draining
