"""The router keeps no cookie jar upstream: a cookie an engine answer sets is never sent on with later requests."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web
from fake_upstream import FakeUpstream

from llmd_kserve.router.app import running_router


class CookieUpstream(FakeUpstream):
    async def completions(self, request: web.Request) -> web.StreamResponse:
        resp = await super().completions(request)
        resp.set_cookie("sticky", "engine-a")
        return resp


@contextlib.asynccontextmanager
async def running_cookie_fake() -> AsyncIterator[CookieUpstream]:
    fake = CookieUpstream()
    app = web.Application()
    app.router.add_post("/v1/completions", fake.completions)
    app.router.add_get("/v1/models", fake.models)
    app.router.add_get("/metrics", fake.metrics)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    fake.url = f"http://localhost:{runner.addresses[0][1]}"  # a host name: a cookie jar would keep its cookies
    try:
        yield fake
    finally:
        await runner.cleanup()


async def test_engine_cookies_are_not_kept():
    body = {"model": "fake-model", "prompt": "hello", "max_tokens": 2}
    async with running_cookie_fake() as fake, running_router(endpoints=[fake.url], config="round-robin") as rt:
        for _ in range(3):  # a fresh client (no cookie jar of its own) each time
            async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as s, \
                    s.post(f"{rt.url}/v1/completions", json=body) as r:
                assert r.status == 200
                await r.read()
        assert len(fake.seen) == 3
        assert all("Cookie" not in seen["headers"] for seen in fake.seen)
