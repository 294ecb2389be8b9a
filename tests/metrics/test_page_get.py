"""PageGetter against real servers on 127.0.0.1: body framings, gzip, keep-alive reuse and its loss, errors."""

from __future__ import annotations

import asyncio
import gzip
import socket

import pytest
from aiohttp import web
from yarl import URL

from llmd_kserve.metrics.page_get import PageGetter

PAGE = b'vllm:num_requests_waiting{engine="0"} 3.0\n' * 50


@pytest.fixture
async def server():
    peers: list[tuple] = []

    async def plain(req: web.Request) -> web.Response:
        peers.append(req.transport.get_extra_info("peername"))
        return web.Response(body=PAGE + ",".join(req.query.getall("name[]", ())).encode(), content_type="text/plain")

    async def chunked(req: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(req)
        for i in range(0, len(PAGE), 100):
            await resp.write(PAGE[i:i + 100])
        await resp.write_eof()
        return resp

    async def zipped(_req: web.Request) -> web.Response:
        return web.Response(body=gzip.compress(PAGE), headers={"Content-Encoding": "gzip"})

    async def close(_req: web.Request) -> web.Response:
        return web.Response(body=PAGE, headers={"Connection": "close"})

    async def missing(_req: web.Request) -> web.Response:
        return web.Response(status=404, text="nope")

    app = web.Application()
    for path, h in (("/plain", plain), ("/chunked", chunked), ("/gzip", zipped), ("/close", close),
                    ("/missing", missing)):
        app.router.add_get(path, h)
    runner = web.AppRunner(app, keepalive_timeout=0.3)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield URL(f"http://127.0.0.1:{runner.addresses[0][1]}"), peers
    await runner.cleanup()


async def test_framings_gzip_and_keep_alive(server):
    base, peers = server
    g = PageGetter(base)
    try:
        assert await g.get(base / "plain") == (200, PAGE)
        assert await g.get(URL(f"{base}/plain?name%5B%5D=a%3Ab", encoded=True)) == (200, PAGE + b"a:b")
        assert await g.get(base / "chunked") == (200, PAGE)
        assert await g.get(base / "gzip") == (200, PAGE)
        assert (await g.get(base / "missing"))[0] == 404
        assert await g.get(base / "plain") == (200, PAGE)
        assert len(set(peers)) == 1  # one connection for all of them
        assert await g.get(base / "close") == (200, PAGE)  # the server closes it after this answer
        assert await g.get(base / "plain") == (200, PAGE)
        await asyncio.sleep(0.6)  # the server drops the idle keep-alive connection: the next get reconnects
        assert await g.get(base / "plain") == (200, PAGE)
        assert len(set(peers)) == 3
        await asyncio.gather(*(g.get(base / "plain") for _ in range(5)))  # concurrent calls take turns
    finally:
        g.close()


async def test_errors():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ConnectionError):
        await PageGetter(URL(f"http://127.0.0.1:{port}")).get(URL(f"http://127.0.0.1:{port}/metrics"))
    with pytest.raises(ValueError):
        PageGetter(URL("https://example.invalid/metrics"))

    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HELLO there\r\n\r\n")
        await writer.drain()
        writer.close()

    srv = await asyncio.start_server(garbage, "127.0.0.1", 0)
    url = URL(f"http://127.0.0.1:{srv.sockets[0].getsockname()[1]}/metrics")
    try:
        with pytest.raises(ValueError, match="status line"):
            await PageGetter(url).get(url)
    finally:
        srv.close()
        await srv.wait_closed()
