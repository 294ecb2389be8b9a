"""The lean HTTP/1.1 server at the byte level: what it serves itself, what it hands to aiohttp, its limits."""

from __future__ import annotations

import asyncio
import json

import pytest

from llmd_kserve.engine_sim.server import running_engine
from llmd_kserve.router.app import running_router
from llmd_kserve.router.lean_server import parse_head, response_head

MODEL = "llama-8b-shape"
BODY = json.dumps({"model": MODEL, "prompt": "hello there", "max_tokens": 2}).encode()


def post(path: str = "/v1/completions", body: bytes = BODY, extra: bytes = b"", version: bytes = b"1.1") -> bytes:
    return (b"POST %b HTTP/%b\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%b\r\n%b"
            % (path.encode(), version, len(body), extra, body))


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """(status, headers with lower-case names, body) of one response: Content-Length, chunked or until close."""
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    lines = head.split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:] if x)}
    if "content-length" in headers:
        return status, headers, await reader.readexactly(int(headers["content-length"]))
    if headers.get("transfer-encoding") == "chunked":
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                return status, headers, body
            body += chunk[:-2]
    return status, headers, await reader.read()


@pytest.fixture
async def stack():
    async with running_engine(port=0, model=MODEL, time_scale=0.0) as eng, \
            running_router(endpoints=[eng.url], scrape_interval=0.02, header_timeout=0.5, body_timeout=0.5,
                           max_body_bytes=4096) as router:
        host, port = router.url.removeprefix("http://").split(":")
        yield eng, router, (host, int(port))


async def connect(addr: tuple[str, int]) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(*addr)


def _inflight(router) -> object:
    return next(p for p in router.state.scheduler.current.producers if p.type == "inflight-load-producer")


async def test_keep_alive_requests_are_served_by_the_lean_protocol(stack):
    _eng, _router, addr = stack
    reader, writer = await connect(addr)
    for path in ("/v1/completions", "/v1/completions", "/v1/chat/completions"):
        body = BODY if "chat" not in path else json.dumps(
            {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}).encode()
        writer.write(post(path, body))
        status, headers, payload = await read_response(reader)
        assert status == 200 and json.loads(payload)["choices"]
        assert "server" not in headers  # aiohttp names itself; the lean protocol does not
        assert headers["x-llmd-endpoint"] and headers["x-request-id"] and headers["date"]
    writer.close()


async def test_pipelined_requests_are_answered_in_order_also_across_a_hand_off(stack):
    """Three requests in one write: two completions with distinct request ids, then /health (aiohttp's route):
    three answers in that order on the one connection."""
    _eng, _router, addr = stack
    reader, writer = await connect(addr)
    writer.write(post(extra=b"x-request-id: first\r\n") + post(extra=b"x-request-id: second\r\n")
                 + b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    got = [await read_response(reader) for _ in range(3)]
    assert [g[0] for g in got] == [200, 200, 200]
    assert [g[1].get("x-request-id") for g in got[:2]] == ["first", "second"]
    assert "server" not in got[0][1] and "server" in got[2][1]  # the third went to aiohttp
    writer.write(post(extra=b"x-request-id: third\r\n"))  # the connection stays with aiohttp and keeps working
    status, headers, _ = await read_response(reader)
    assert status == 200 and headers["x-request-id"] == "third"
    writer.close()


@pytest.mark.parametrize("request_bytes", [
    b"POST /v1/completions HTTP/1.1 extra\r\nContent-Length: 2\r\n\r\n{}",  # malformed request line
    b"POST /v1/completions HTTP/1.1\r\nBad Header: x\r\nContent-Length: 2\r\n\r\n{}",  # space in a name
    b"POST /v1/completions HTTP/1.1\r\nContent-Length: 2\r\n folded\r\n\r\n{}",  # obs-fold
    b"POST /v1/completions HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}x",  # two lengths
    b"POST /v1/completions HTTP/1.1\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"GARBAGE\r\n\r\n",
])
async def test_malformed_requests_get_json_400(stack, request_bytes):
    """What the lean protocol does not parse strictly goes to aiohttp's parser, whose errors are OpenAI JSON."""
    _eng, _router, addr = stack
    reader, writer = await connect(addr)
    writer.write(request_bytes)
    status, headers, payload = await read_response(reader)
    assert status == 400 and headers["content-type"].startswith("application/json")
    assert json.loads(payload)["error"]["code"] == 400
    writer.close()


async def test_oversized_body_is_json_413(stack):
    eng, router, addr = stack
    reader, writer = await connect(addr)
    writer.write(post(body=b"x" * 5000))
    status, _headers, payload = await read_response(reader)
    assert status == 413 and json.loads(payload)["error"]["type"] == "RequestTooLargeError"
    assert _inflight(router).load(eng.url) == (0, 0)
    writer.close()


async def test_a_big_body_in_many_reads_is_served_whole(stack):
    """A body far larger than one read, sent slowly: every byte arrives (reading is not paused under it)."""
    _eng, _router, addr = stack
    body = json.dumps({"model": MODEL, "prompt": "word " * 700, "max_tokens": 2}).encode()  # under 4096 bytes
    reader, writer = await connect(addr)
    whole = post(body=body)
    writer.write(whole[:200])
    await writer.drain()
    await asyncio.sleep(0.05)  # the request is being served (its body awaited) when the rest comes
    for i in range(200, len(whole), 512):
        writer.write(whole[i:i + 512])
        await writer.drain()
    status, _headers, payload = await read_response(reader)
    assert status == 200 and json.loads(payload)["usage"]["prompt_tokens"] >= 700
    writer.close()


async def test_chunked_body_is_served(stack):
    _eng, _router, addr = stack
    reader, writer = await connect(addr)
    writer.write(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                 + b"%x\r\n%b\r\n" % (10, BODY[:10]) + b"%x\r\n%b\r\n" % (len(BODY) - 10, BODY[10:]) + b"0\r\n\r\n")
    status, _headers, payload = await read_response(reader)
    assert status == 200 and json.loads(payload)["choices"]
    writer.close()


async def test_body_in_pieces_is_served_and_a_body_that_stops_gets_408(stack):
    _eng, _router, addr = stack
    reader, writer = await connect(addr)
    whole = post()
    for i in range(0, len(whole), 7):
        writer.write(whole[i:i + 7])
        await writer.drain()
        await asyncio.sleep(0.005)
    status, _headers, payload = await read_response(reader)
    assert status == 200 and json.loads(payload)["choices"]
    writer.write(post()[:-5])  # the last 5 bytes never come
    status, headers, payload = await read_response(reader)
    assert status == 408 and json.loads(payload)["error"]["type"] == "RequestTimeoutError"
    assert headers["connection"] == "close" and await reader.read() == b""


async def test_slow_headers_and_idle_connections_are_closed(stack):
    _eng, _router, addr = stack
    reader, writer = await connect(addr)
    writer.write(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n")  # the rest of the head never comes
    assert await asyncio.wait_for(reader.read(), 10) == b""
    reader, writer = await connect(addr)
    writer.write(post())
    assert (await read_response(reader))[0] == 200
    assert await asyncio.wait_for(reader.read(), 10) == b""  # idle after its answer: closed


async def test_connection_close_and_http_1_0(stack):
    _eng, _router, addr = stack
    reader, writer = await connect(addr)
    writer.write(post(extra=b"Connection: close\r\n"))
    status, headers, _ = await read_response(reader)
    assert status == 200 and headers["connection"] == "close" and await reader.read() == b""
    reader, writer = await connect(addr)
    writer.write(post(version=b"1.0"))  # handed to aiohttp
    status, _headers, payload = await read_response(reader)
    assert status == 200 and json.loads(payload)["choices"]
    writer.close()


async def test_client_disconnect_mid_stream_cancels_upstream_and_settles():
    async with running_engine(port=0, model=MODEL, time_scale=1.0) as eng, \
            running_router(endpoints=[eng.url], scrape_interval=0.02) as router:
        host, port = router.url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        body = json.dumps({"model": MODEL, "prompt": "hello " * 20, "max_tokens": 4000, "ignore_eos": True,
                           "stream": True}).encode()
        writer.write(post(body=body))
        head = await reader.readuntil(b"\r\n\r\n")
        assert b"200" in head.split(b"\r\n")[0] and b"chunked" in head.lower()
        assert b"data: " in await reader.readuntil(b"\n\n")  # a token came
        assert _inflight(router).load(eng.url)[0] == 1
        writer.close()
        for _ in range(500):
            if _inflight(router).load(eng.url) == (0, 0) and eng.core.num_running == 0:
                break
            await asyncio.sleep(0.01)
        assert _inflight(router).load(eng.url) == (0, 0)
        assert eng.core.num_running == 0  # the engine saw the disconnect and aborted
        assert router.state.metrics.client_disconnects._value.get() == 1


def test_parse_head_takes_only_plain_posts_to_the_two_routes():
    ok = b"POST /v1/completions HTTP/1.1\r\nHost: x\r\ncontent-length: 12\r\nX-Session-Id:  s1 "
    kind, path, headers, length, close = parse_head(ok)  # type: ignore[misc]
    assert (kind, path, length, close) == ("completion", "/v1/completions", 12, False)
    assert headers["x-session-id"] == "s1" and headers["Content-Length"] == "12"
    spaced = ok + b"\r\nA:\t a \t b\t \r\nB:\r\nC: \t\r\nD:x:y "
    assert [(k, v) for k, v in parse_head(spaced)[2].items()][-4:] == [  # type: ignore[index]
        ("A", "a \t b"), ("B", ""), ("C", ""), ("D", "x:y")]  # white space around a value is not part of it
    for bad in (b"POST /v1/completions?x=1 HTTP/1.1\r\nContent-Length: 1", b"GET /v1/completions HTTP/1.1",
                b"POST /v1/completions HTTP/1.0\r\nContent-Length: 1", b"POST /v1/completions HTTP/1.1",
                b"POST /v1/completions HTTP/1.1\r\nContent-Length: -1",
                b"POST /v1/completions HTTP/1.1\r\nContent-Length: 1\r\nExpect: 100-continue",
                b"POST /v1/completions HTTP/1.1\r\nContent-Length: 1\r\nConnection: upgrade",
                b"POST /v1/completions HTTP/1.1\r\nContent-Length: 1\r\nX: a\x00b"):
        assert parse_head(bad) is None, bad


def test_response_head_refuses_line_breaks_in_headers():
    assert response_head(200, {"A": "b"}, 3, False).startswith(b"HTTP/1.1 200 OK\r\nA: b\r\nContent-Length: 3\r\n")
    with pytest.raises(ValueError):
        response_head(200, {"A": "b\r\nSet-Cookie: x"}, 3, False)
