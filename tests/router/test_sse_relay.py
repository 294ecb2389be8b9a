"""The lean relay: usage event out, slow clients pause the upstream read, a client gone aborts it, HTTP/1.0."""

from __future__ import annotations

import asyncio
import json

from fake_upstream import running_fake

from llmd_kserve.lean_http import Address, Connection, StreamClient
from llmd_kserve.router.app import running_router
from llmd_kserve.router.sse_relay import HIGH_WATER, SseRelay
from tests.fake_transport import FakeTransport


def exchange():
    conn = Connection(StreamClient(), Address(False, "127.0.0.1", 1, ""))
    up = FakeTransport()
    conn.connection_made(up)  # type: ignore[arg-type]
    ex = conn.start(b"x")
    conn.data_received(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
    return ex, up


USAGE = b'data: {"id":"c","choices":[],"usage":{"prompt_tokens":7,"completion_tokens":2}}\n\n'


async def test_usage_event_is_taken_out_and_kept_for_accounting():
    ex, _ = exchange()
    out = FakeTransport()
    firsts: list[int] = []
    relay = SseRelay(out, ex, strip_usage=True, tap=None, on_first=lambda: firsts.append(1))  # type: ignore[arg-type]
    ex.attach(relay)
    relay(b'data: {"choices":[{"text":"a"}]}\n\n')
    relay(USAGE)
    relay(b"data: [DONE]\n\n")
    body = b"".join(out.written)
    assert b'"usage"' not in body and body.endswith(b"e\r\ndata: [DONE]\n\n\r\n")
    assert relay.usage().prompt_tokens == 7 and firsts == [1]


async def test_slow_client_pauses_the_upstream_read_until_its_buffer_drains():
    ex, up = exchange()
    out = FakeTransport()
    relay = SseRelay(out, ex, strip_usage=False, tap=None, on_first=lambda: None)  # type: ignore[arg-type]
    ex.attach(relay)
    out.buffered = HIGH_WATER + 1
    relay(b"data: 1\n\n")
    assert up.paused
    await asyncio.sleep(0.02)
    assert up.paused  # still full
    out.buffered = 0
    for _ in range(100):
        await asyncio.sleep(0.005)
        if not up.paused:
            break
    assert not up.paused


async def test_client_gone_aborts_the_upstream():
    ex, up = exchange()
    out = FakeTransport()
    relay = SseRelay(out, ex, strip_usage=False, tap=None, on_first=lambda: None)  # type: ignore[arg-type]
    ex.attach(relay)
    out.closing = True
    relay(b"data: 1\n\n")
    assert relay.client_gone and up.aborted and ex.done.done() and out.written == []


async def test_http10_client_gets_an_unframed_stream_and_a_close():
    async with running_fake(tokens=3) as fake, running_router(endpoints=[fake.url], config="round-robin") as rt:
        host, port = rt.url.removeprefix("http://").split(":")
        body = json.dumps({"model": "fake-model", "prompt": "hi", "max_tokens": 3, "stream": True}).encode()
        for _ in range(200):  # until the router has scraped the endpoint
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(b"POST /v1/completions HTTP/1.0\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                         b"\r\n%b" % (len(body), body))
            raw = await asyncio.wait_for(reader.read(), 10)  # to EOF: the router closes after the answer
            writer.close()
            if b" 200 " in raw.split(b"\r\n", 1)[0]:
                break
            await asyncio.sleep(0.05)
        head, _, payload = raw.partition(b"\r\n\r\n")
        assert b"transfer-encoding" not in head.lower()
        assert payload.startswith(b"data: {") and payload.endswith(b"data: [DONE]\n\n") and b'"usage"' not in payload
        assert payload.count(b"data: ") == 4
