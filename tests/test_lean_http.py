"""The lean HTTP/1.1 client: response framing fed in every split, errors, keep-alive reuse over real sockets."""

from __future__ import annotations

import asyncio
import gc
import random
import shutil
import ssl
import subprocess

import pytest
from aiohttp import web

from llmd_kserve.lean_http import Address, Connection, StreamClient, UpstreamBroken, _request_bytes, address
from tests.fake_transport import FakeTransport
from tests.wire import golden_text

ADDR = Address(False, "127.0.0.1", 1, "")


def connection() -> tuple[Connection, FakeTransport, StreamClient]:
    client = StreamClient()
    conn = Connection(client, ADDR)
    t = FakeTransport()
    conn.connection_made(t)  # type: ignore[arg-type]
    return conn, t, client


def feed(conn: Connection, raw: bytes, cuts: list[int]) -> None:
    last = 0
    for cut in [*cuts, len(raw)]:
        if cut > last:
            conn.data_received(raw[last:cut])
            last = cut


PIECES = [b"data: one\n\n", b"data: two plus more bytes\n\n"]
CHUNKED = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"%x\r\n%b\r\n%X;ext=1\r\n%b\r\n0\r\nX-Trailer: t\r\n\r\n" % (len(PIECES[0]), PIECES[0],
                                                                     len(PIECES[1]), PIECES[1]))


async def test_chunked_body_in_every_two_way_split_gives_the_same_chunks():
    for cut in range(1, len(CHUNKED)):
        conn, t, client = connection()
        ex = conn.start(b"GET / HTTP/1.1\r\n\r\n")
        got: list[bytes] = []
        ex.attach(got.append)
        feed(conn, CHUNKED, [cut])
        assert ex.done.done() and ex.done.exception() is None, cut
        assert b"".join(got) == b"".join(PIECES), cut
        assert ex.head.result().status == 200 and ex.head.result().get("content-type") == "text/event-stream"
        ex.release()
        assert client._idle[ADDR] == [conn] and not t.aborted  # kept alive for the next request


async def test_one_segment_with_many_chunks_emits_each_chunk_whole():
    conn, _, _ = connection()
    ex = conn.start(b"x")
    got: list[bytes] = []
    ex.attach(got.append)
    conn.data_received(CHUNKED)
    assert got == PIECES


async def test_chunks_before_attach_are_kept_and_first_is_set():
    conn, _, _ = connection()
    ex = conn.start(b"x")
    conn.data_received(CHUNKED[:-25])
    assert ex.first.done() and not ex.done.done()
    got: list[bytes] = []
    ex.attach(got.append)
    conn.data_received(CHUNKED[-25:])
    assert b"".join(got) == b"".join(PIECES) and ex.done.done()


@pytest.mark.parametrize("size", [b"zz", b"0x1a", b"+1a", b"-1", b"1_0", b""])
async def test_malformed_chunk_size_breaks_the_exchange_and_drops_the_connection(size):
    conn, t, _ = connection()
    ex = conn.start(b"x")
    conn.data_received(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + size + b"\r\nabc\r\n")
    with pytest.raises(UpstreamBroken):
        await ex.done
    assert t.aborted and conn.closed


async def test_content_length_body_in_pieces_and_extra_bytes_end_keep_alive():
    conn, t, client = connection()
    ex = conn.start(b"x")
    raw = b'HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{"error":1}'
    for cut in range(1, len(raw)):
        conn, t, client = connection()
        ex = conn.start(b"x")
        feed(conn, raw, [cut])
        assert await ex.read_all(1.0) == b'{"error":1}' and ex.head.result().status == 400
    conn, t, client = connection()
    ex = conn.start(b"x")
    conn.data_received(raw + b"junk")
    assert await ex.read_all(1.0) == b'{"error":1}'
    ex.release()
    assert t.aborted and not client._idle.get(ADDR)  # a server that says more than it announced


async def test_body_until_close_and_connection_lost_mid_body():
    conn, t, _ = connection()
    ex = conn.start(b"x")
    conn.data_received(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nhello ")
    conn.data_received(b"world")
    conn.connection_lost(None)
    assert await ex.read_all(1.0) == b"hello world"
    conn, t, _ = connection()
    ex = conn.start(b"x")
    conn.data_received(CHUNKED[:100])
    conn.connection_lost(None)
    with pytest.raises(UpstreamBroken) as info:
        await ex.done
    assert not info.value.before_answer


async def test_not_http_and_oversized_heads_are_errors():
    conn, _, _ = connection()
    ex = conn.start(b"x")
    conn.data_received(b"SSH-2.0-OpenSSH\r\n\r\n")
    with pytest.raises(UpstreamBroken):
        await ex.head
    conn, _, _ = connection()
    ex = conn.start(b"x")
    conn.data_received(b"HTTP/1.1 200 OK\r\n")
    for _ in range(70):
        if ex.head.done():
            break
        conn.data_received(b"X-Long: " + b"a" * 1000 + b"\r\n")
    with pytest.raises(UpstreamBroken, match="too large"):
        await ex.head


def test_request_bytes_and_targets():
    assert _request_bytes("GET", "/metrics?name[]=a", "::1", 80, b"", {"Accept-Encoding": "identity"}) == (
        b"GET /metrics?name[]=a HTTP/1.1\r\nHost: [::1]:80\r\nAccept-Encoding: identity\r\n\r\n")
    assert _request_bytes("POST", "/v1/x", "h", 8, b"{}", {}).endswith(b"Content-Length: 2\r\n\r\n{}")
    with pytest.raises(ValueError, match="line break"):
        _request_bytes("POST", "/", "h", 1, b"", {"x-session-id": "a\r\nX-Admin: 1"})
    assert address("http://10.0.0.1:8000") == (False, "10.0.0.1", 8000, "")
    assert address("http://engine/prefix/") == (False, "engine", 80, "/prefix")
    assert address("https://engine") == (True, "engine", 443, "")
    assert address("ftp://h:1") is None and address("http://h:1?x=1") is None and address("http://h:99999") is None


async def _server(handler) -> tuple[web.AppRunner, str, list[int]]:
    peers: list[int] = []

    async def route(request: web.Request) -> web.StreamResponse:
        peers.append(request.transport.get_extra_info("peername")[1])
        return await handler(request)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", route)
    runner = web.AppRunner(app, keepalive_timeout=0.2)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}", peers


async def test_real_server_keep_alive_reuse_stale_retry_and_streaming():
    async def handler(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        if request.path == "/stream":
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(request)
            for i in range(3):
                await resp.write(b"data: %d\n\n" % i)
            await resp.write_eof()
            return resp
        return web.json_response({"method": request.method, "len": len(body)})

    runner, url, peers = await _server(handler)
    client = StreamClient(idle_expiry=10.0)
    try:
        ex = await client.request(url, "/a", b"12345", {"Content-Type": "application/json"})
        assert await ex.read_all(5.0) == b'{"method": "POST", "len": 5}'
        ex.release()
        ex = await client.request(url, "/b", b"", {}, method="GET")
        assert b'"GET"' in await ex.read_all(5.0)
        ex.release()
        assert peers[0] == peers[1]  # the same keep-alive connection
        ex = await client.request(url, "/stream", b"{}", {})
        got: list[bytes] = []
        ex.attach(got.append)
        await ex.wait(5.0)
        ex.release()
        assert got == [b"data: 0\n\n", b"data: 1\n\n", b"data: 2\n\n"]
        await asyncio.sleep(0.6)  # the server closes idle keep-alive connections after 0.2 s
        assert not client._idle  # a connection the engine closed leaves the pool (no leak when engines go away)
        stale = Connection(client, address(url))  # pooled, and closed by the engine as the request goes out
        stale.connection_made(FakeTransport())  # type: ignore[arg-type]
        client.put_back(stale)
        task = asyncio.ensure_future(client.request(url, "/c", b"{}", {}))
        await asyncio.sleep(0)
        assert stale.transport.written and stale.exchange is not None  # type: ignore[attr-defined]
        stale.connection_lost(None)  # no byte of an answer came: once more on a fresh connection
        ex = await task
        assert b'"POST"' in await ex.read_all(5.0)
        ex.release()
    finally:
        client.close()
        await runner.cleanup()


async def test_connect_refused_is_an_oserror_and_idle_timeout_a_timeout():
    client = StreamClient()
    with pytest.raises(OSError):
        await client.request("http://127.0.0.1:1", "/", b"", {})

    async def silent(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(b"data: 0\n\n")
        await asyncio.sleep(0.5)
        return resp

    runner, url, _ = await _server(silent)
    try:
        ex = await client.request(url, "/", b"", {})
        await ex.first
        with pytest.raises(TimeoutError):
            await ex.wait(0.1)
        ex.close()
        assert ex.conn.closed
    finally:
        client.close()
        await runner.cleanup()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command for a test certificate")
async def test_https_endpoint_with_its_certificate_checked(tmp_path):
    key, cert = tmp_path / "k.pem", tmp_path / "c.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)

    async def hello(request: web.Request) -> web.Response:
        return web.json_response({"tls": request.secure})

    app = web.Application()
    app.router.add_post("/v1/completions", hello)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ctx).start()
    url = f"https://127.0.0.1:{runner.addresses[0][1]}"
    try:
        trusting = StreamClient(ssl_context=ssl.create_default_context(cafile=str(cert)))
        ex = await trusting.request(url, "/v1/completions", b"{}", {})
        assert await ex.read_all(5.0) == b'{"tls": true}'
        ex.release()
        trusting.close()
        with pytest.raises(ssl.SSLCertVerificationError):  # the system's CAs do not know a self-signed server
            await StreamClient().request(url, "/v1/completions", b"{}", {})
    finally:
        await runner.cleanup()


async def test_vllm_stream_as_uvicorn_frames_it_in_random_splits():
    """vLLM 0.26's golden SSE answer, one chunk per event with uvicorn's lower-case headers, fed in random pieces."""
    events = [e + b"\n\n" for e in golden_text("completions_stream.sse").encode().split(b"\n\n") if e.strip()]
    raw = (b"HTTP/1.1 200 OK\r\ndate: Mon, 30 Nov 2026 12:00:00 GMT\r\nserver: uvicorn\r\n"
           b"content-type: text/event-stream; charset=utf-8\r\ntransfer-encoding: chunked\r\n\r\n"
           + b"".join(b"%x\r\n%b\r\n" % (len(e), e) for e in events) + b"0\r\n\r\n")
    rng = random.Random(7)
    for _ in range(50):
        conn, _, client = connection()
        ex = conn.start(b"x")
        got: list[bytes] = []
        ex.attach(got.append)
        feed(conn, raw, sorted(rng.sample(range(1, len(raw)), 12)))
        assert got == events and ex.done.done() and ex.head.result().get("content-type").startswith(
            "text/event-stream")
        ex.release()
        assert client._idle[ADDR] == [conn]
    assert events[-1] == b"data: [DONE]\n\n" and b'"usage"' in events[-2]


async def test_interim_answers_are_skipped():
    conn, _, _ = connection()
    ex = conn.start(b"x")
    raw = (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
           b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    feed(conn, raw, [10, 30, 60])
    assert ex.head.result().status == 200 and await ex.read_all(1.0) == b"ok"


async def test_a_broken_exchange_leaves_no_unretrieved_exception():
    """The head's failure is awaited; ``first`` and ``done`` are not, and must not be logged when collected."""
    reported: list[dict] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _, ctx: reported.append(ctx))
    try:
        conn, t, _ = connection()
        ex = conn.start(b"x")
        conn.data_received(b"not http at all\r\n\r\n")
        with pytest.raises(UpstreamBroken):
            await ex.head
        assert t.aborted and ex.first.done() and ex.done.done()
        del ex, conn
        gc.collect()
        await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(None)
    assert not [c for c in reported if "never retrieved" in c.get("message", "")]
