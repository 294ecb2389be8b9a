"""A recording reverse proxy for tests: sits in front of an engine and keeps every generation request it relays."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    body: Any
    status: int = 0
    answer: Any = None
    """The upstream's JSON answer (non-streamed responses only)."""


@dataclass
class Recorder:
    url: str
    seen: list[Seen] = field(default_factory=list)

    def generations(self) -> list[Seen]:
        return [s for s in self.seen if s.path.startswith("/v1/") and s.path.endswith("completions")]


@contextlib.asynccontextmanager
async def recording(upstream: str) -> AsyncIterator[Recorder]:
    """Serve on a free port, relay every request to ``upstream`` (streaming kept), record the POSTs."""
    session = aiohttp.ClientSession(auto_decompress=False)
    rec = Recorder("")

    async def relay(request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        entry = None
        if request.method == "POST":
            entry = Seen(request.path, {k.lower(): v for k, v in request.headers.items()}, await request.json() if raw else None)
            rec.seen.append(entry)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        async with session.request(request.method, upstream + request.path_qs, data=raw or None,
                                   headers=headers) as up:
            if entry is not None:
                entry.status = up.status
            ctype = up.headers.get("Content-Type", "")
            if not ctype.startswith("text/event-stream"):
                body = await up.read()
                if entry is not None and ctype.startswith("application/json"):
                    entry.answer = await up.json()
                return web.Response(body=body, status=up.status, headers={"Content-Type": ctype} if ctype else None)
            resp = web.StreamResponse(status=up.status, headers={"Content-Type": ctype})
            await resp.prepare(request)
            async for chunk in up.content.iter_any():
                await resp.write(chunk)
            await resp.write_eof()
            return resp

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", relay)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    rec.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield rec
    finally:
        await runner.cleanup()
        await session.close()
