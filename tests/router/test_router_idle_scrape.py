"""The router's first request after an idle minute routes on fresh load data (adaptive scraping; fake clock)."""

from __future__ import annotations

import contextlib

import aiohttp
from aiohttp import web

from llmd_kserve.control.runtime import Runtime
from llmd_kserve.control.settings import RouterSettings
from llmd_kserve.router.app import running_router
from tests.metrics.test_scraper import FakeClock, wait_for
from tests.router.fake_upstream import FakeUpstream


@contextlib.asynccontextmanager
async def _engine(waiting: dict[str, int], name: str):
    up = FakeUpstream()

    async def metrics(_req: web.Request) -> web.Response:
        return web.Response(text=f'vllm:num_requests_waiting{{model_name="m"}} {waiting[name]}\n'
                                 'vllm:kv_cache_usage_perc{model_name="m"} 0.1\n')

    app = web.Application()
    app.router.add_post("/v1/completions", up.completions)
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # noqa: SLF001
    finally:
        await runner.cleanup()


async def test_first_request_after_idle_minute_routes_on_fresh_load():
    waiting = {"a": 0, "b": 50}
    clock = FakeClock()
    async with _engine(waiting, "a") as a, _engine(waiting, "b") as b:
        state = Runtime.build(RouterSettings(config="load-only", scrape_interval=0.02,
                                                  scrape_idle_interval=None), [a, b])
        scraper = state.scraper
        assert scraper is not None and scraper.adaptive
        scraper.clock = clock
        async with running_router(state=state) as router, aiohttp.ClientSession() as http:
            await wait_for(lambda: scraper._n_idle == 2)  # noqa: SLF001  (scraped once, then idle)
            body = {"model": "m", "prompt": "hi", "max_tokens": 2}
            async with http.post(f"{router.url}/v1/completions", json=body) as r:
                assert r.status == 200 and r.headers["x-llmd-endpoint"] == a  # b has 50 waiting
            clock.t += 2.0  # past the 1 s linger after the last request
            await wait_for(lambda: scraper._n_idle == 2)  # noqa: SLF001  (both poll loops asleep: no polling)
            scrapes = {e: st.scrapes for e, st in scraper.stats().items()}
            waiting.update(a=50, b=0)  # the load moves (other clients) during an idle minute
            clock.t += 60.0
            assert {e: st.scrapes for e, st in scraper.stats().items()} == scrapes
            assert scraper.get(a).waiting == 0  # what the router would route on without the refresh
            async with http.post(f"{router.url}/v1/completions", json=body) as r:
                assert r.status == 200 and r.headers["x-llmd-endpoint"] == b
            assert scraper.get(a).waiting == 50 and not scraper.get(a).stale
