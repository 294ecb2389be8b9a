"""The router's proxy over real HTTP against fake upstreams: headers, streaming, retry, cancellation, errors."""

from __future__ import annotations

import asyncio
import json

import aiohttp
from fake_upstream import closed_port_url, running_fake

from llmd_kserve.router.app import running_router

BODY = {"model": "fake-model", "prompt": "hello there", "max_tokens": 4}


async def wait_healthy(session: aiohttp.ClientSession, url: str, n: int = 1) -> None:
    for _ in range(500):
        async with session.get(f"{url}/health") as r:
            if (await r.json())["healthy"] >= n:
                return
        await asyncio.sleep(0.01)
    raise AssertionError("router never saw a healthy endpoint")


async def post(session, url, body, **kw):
    async with session.post(f"{url}/v1/completions", json=body, **kw) as r:
        return r.status, r.headers, await r.read()


async def test_non_streaming_passthrough_and_headers():
    async with running_fake(cached_tokens=7) as fake, running_router(endpoints=[fake.url], config="round-robin") as rt, \
            aiohttp.ClientSession() as s:
        await wait_healthy(s, rt.url)
        status, headers, raw = await post(s, rt.url, BODY, headers={"x-request-id": "req-123"})
        assert status == 200
        assert headers["x-request-id"] == "req-123" and headers["x-llmd-endpoint"] == fake.url
        assert fake.seen[-1]["headers"]["x-request-id"] == "req-123"
        assert json.loads(raw)["usage"]["prompt_tokens_details"]["cached_tokens"] == 7
        status, headers, _ = await post(s, rt.url, BODY)
        assert status == 200 and len(headers["x-request-id"]) >= 16  # generated
        assert fake.seen[-1]["headers"]["x-request-id"] == headers["x-request-id"]
        async with s.get(f"{rt.url}/debug/decisions?request_id=req-123") as r:
            (d,) = (await r.json())["decisions"]
        assert d["target"] == fake.url and d["reported_cached_tokens"] == 7 and d["outcome"] == "ok"
        assert all(set(per) <= {fake.url} for per in d["scores"].values())  # round-robin has no scorers
        assert fake.url in d["totals"]
        async with s.get(f"{rt.url}/v1/models") as r:
            assert [m["id"] for m in (await r.json())["data"]] == ["fake-model"]
        async with s.get(f"{rt.url}/metrics") as r:
            text = await r.text()
        assert f'llmd_router_decisions_total{{endpoint="{fake.url}"' in text
        assert f'llmd_router_reported_cached_tokens_total{{endpoint="{fake.url}"}} 14.0' in text  # two requests, 7 each
        assert "llmd_router_scheduling_seconds_count 2.0" in text


async def test_streaming_usage_injected_for_accounting_and_stripped_for_client():
    async with running_fake(cached_tokens=5, tokens=3) as fake, \
            running_router(endpoints=[fake.url], config="round-robin") as rt, aiohttp.ClientSession() as s:
        await wait_healthy(s, rt.url)
        status, headers, raw = await post(s, rt.url, {**BODY, "stream": True}, headers={"x-request-id": "s1"})
        assert status == 200 and headers["Content-Type"].startswith("text/event-stream")
        assert fake.seen[-1]["body"]["stream_options"] == {"include_usage": True}
        events = [e for e in raw.decode().split("\n\n") if e]
        assert events[-1] == "data: [DONE]" and len(events) == 4 and b"usage" not in raw
        status, _, raw = await post(s, rt.url, {**BODY, "stream": True, "stream_options": {"include_usage": True}})
        assert b'"cached_tokens":5' in raw  # the client asked for usage: passed through
        async with s.get(f"{rt.url}/debug/decisions?request_id=s1") as r:
            (d,) = (await r.json())["decisions"]
        assert d["reported_cached_tokens"] == 5 and d["reported_prompt_tokens"] == 10


async def test_retry_on_another_endpoint_after_5xx_before_first_byte():
    async with running_fake(status=500) as bad, running_fake() as good, \
            running_router(endpoints=[bad.url, good.url], config="round-robin") as rt, aiohttp.ClientSession() as s:
        await wait_healthy(s, rt.url, 2)
        for _ in range(4):
            status, headers, _ = await post(s, rt.url, BODY)
            assert status == 200 and headers["x-llmd-endpoint"] == good.url
        assert bad.seen, "round-robin should have tried the failing endpoint"
        async with s.get(f"{rt.url}/metrics") as r:
            text = await r.text()
        assert f'llmd_router_upstream_errors_total{{endpoint="{bad.url}",reason="http_500"}}' in text
        assert "llmd_router_retries_total 0.0" not in text


async def test_retry_when_an_endpoint_is_down():
    """An endpoint on a closed port: the connect error before the first byte is retried elsewhere."""
    async with running_fake() as good, aiohttp.ClientSession() as s:
        down = closed_port_url()
        async with running_router(endpoints=[down, good.url], config="round-robin", max_attempts=2) as rt:
            await wait_healthy(s, rt.url, 1)
            for _ in range(4):
                status, headers, _ = await post(s, rt.url, BODY)
                assert status == 200 and headers["x-llmd-endpoint"] == good.url


async def test_all_upstreams_failing_relays_last_error():
    async with running_fake(status=503) as bad, running_router(endpoints=[bad.url], config="round-robin") as rt, \
            aiohttp.ClientSession() as s:
        await wait_healthy(s, rt.url)
        status, _, raw = await post(s, rt.url, BODY)
        assert status == 503 and json.loads(raw)["error"]["message"] == "boom"


async def test_malformed_requests_get_openai_errors():
    async with running_fake() as fake, running_router(endpoints=[fake.url], config="round-robin") as rt, \
            aiohttp.ClientSession() as s:
        await wait_healthy(s, rt.url)
        for body, status, param in [({"model": "fake-model"}, 400, "prompt"),
                                    ({**BODY, "max_tokens": -1}, 400, "max_tokens"),
                                    ({**BODY, "model": "gpt-9"}, 404, "model")]:
            got, _, raw = await post(s, rt.url, body)
            err = json.loads(raw)["error"]
            assert (got, err["param"], err["code"]) == (status, param, status)
        async with s.post(f"{rt.url}/v1/chat/completions", data=b"{oops") as r:
            assert r.status == 400 and (await r.json())["error"]["type"] == "BadRequestError"
        assert not fake.seen


async def test_bearer_auth_when_api_keys_set():
    async with running_fake() as fake, \
            running_router(endpoints=[fake.url], config="round-robin", api_keys=("k1",)) as rt, \
            aiohttp.ClientSession() as s:
        await wait_healthy(s, rt.url)
        assert (await post(s, rt.url, BODY))[0] == 401
        assert (await post(s, rt.url, BODY, headers={"Authorization": "Bearer k1"}))[0] == 200
        assert "Authorization" not in fake.seen[-1]["headers"]  # the router's key is not sent upstream


async def test_client_disconnect_cancels_upstream():
    async with running_fake(tokens=200, token_delay=0.02) as fake, \
            running_router(endpoints=[fake.url], config="round-robin") as rt, aiohttp.ClientSession() as s:
        await wait_healthy(s, rt.url)
        resp = await s.post(f"{rt.url}/v1/completions", json={**BODY, "stream": True},
                            headers={"x-request-id": "gone"})
        await resp.content.readuntil(b"\n\n")
        resp.close()  # the client goes away mid-stream
        for _ in range(300):
            if "gone" in fake.cancelled:
                break
            await asyncio.sleep(0.01)
        assert fake.cancelled == ["gone"] and "gone" not in fake.finished
        async with s.get(f"{rt.url}/debug/decisions?request_id=gone") as r:
            (d,) = (await r.json())["decisions"]
        assert d["outcome"] == "client_disconnected"


async def test_endpoints_file_change_is_picked_up(tmp_path):
    f = tmp_path / "endpoints.yaml"
    async with running_fake() as a, running_fake() as b, aiohttp.ClientSession() as s:
        f.write_text(f"- url: {a.url}\n")
        async with running_router(endpoints_file=f, config="round-robin", endpoints_poll_interval=0.05) as rt:
            await wait_healthy(s, rt.url)
            assert (await post(s, rt.url, BODY))[1]["x-llmd-endpoint"] == a.url
            f.write_text(f"- url: {b.url}\n  role: both\n")
            for _ in range(300):
                if [e.id for e in rt.state.pool.snapshot] == [b.url]:
                    break
                await asyncio.sleep(0.01)
            await wait_healthy(s, rt.url)
            for _ in range(3):
                assert (await post(s, rt.url, BODY))[1]["x-llmd-endpoint"] == b.url


async def test_render_tokenizer_asks_engine_once_per_prompt():
    async with running_fake() as fake, \
            running_router(endpoints=[fake.url], config="round-robin", tokenizer="render") as rt, \
            aiohttp.ClientSession() as s:
        await wait_healthy(s, rt.url)
        for rid in ("a", "b"):
            assert (await post(s, rt.url, BODY, headers={"x-request-id": rid}))[0] == 200
        chat = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}
        async with s.post(f"{rt.url}/v1/chat/completions", json=chat, headers={"x-request-id": "c"}) as r:
            assert r.status == 200
        assert [r.get("prompt") or r["messages"] for r in fake.renders] == ["hello there", chat["messages"]]
        async with s.get(f"{rt.url}/debug/decisions") as r:
            tokens = {d["client_request_id"]: d["prompt_tokens"] for d in (await r.json())["decisions"]}
        assert tokens == {"a": len('"hello there"'), "b": len('"hello there"'), "c": len(json.dumps(chat["messages"]))}


async def test_set_endpoints_programmatically():
    async with running_fake() as a, running_fake() as b, aiohttp.ClientSession() as s, \
            running_router(endpoints=[a.url], config="round-robin") as rt:
        await wait_healthy(s, rt.url)
        assert rt.state.set_endpoints([b.url + "#role=decode"])
        assert [(e.id, e.role) for e in rt.state.pool.snapshot] == [(b.url, "decode")]
        assert (await post(s, rt.url, BODY))[1]["x-llmd-endpoint"] == b.url
