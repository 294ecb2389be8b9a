"""MetricsScraper against real aiohttp servers on 127.0.0.1: polling, errors, timeouts, staleness (fake clock)."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from llmd_kserve.metrics.scraper import MetricsScraper
from llmd_kserve.stack.procs import free_port
from llmd_kserve.types import Endpoint, EndpointId


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


async def wait_for(pred, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not pred():
        if loop.time() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.005)


@pytest.fixture
async def server(metrics_text):
    state = {"fail": False, "hits": 0, "slow_hits": 0}
    release = asyncio.Event()

    async def metrics(_req):
        state["hits"] += 1
        if state["fail"]:
            return web.Response(status=500, text="boom")
        return web.Response(text=metrics_text, content_type="text/plain")

    async def slow(_req):
        state["slow_hits"] += 1
        await release.wait()
        return web.Response(text=metrics_text)

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/slow/metrics", slow)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # noqa: SLF001
    yield f"http://127.0.0.1:{port}", state
    release.set()
    await runner.cleanup()


async def test_polls_parses_and_marks_stale(server):
    url, state = server
    ok, slow, dead = EndpointId(url), EndpointId(url + "/slow"), EndpointId(f"http://127.0.0.1:{free_port()}")
    clock = FakeClock()
    updates = []
    scraper = MetricsScraper(interval=0.02, stale_after=1.0, clock=clock, timeout=0.2,
                             on_update=lambda eid, m: updates.append(eid))
    assert scraper.get(ok).stale  # never scraped
    scraper.set_endpoints([Endpoint(ok), Endpoint(slow), Endpoint(dead)])
    async with scraper:
        await wait_for(lambda: scraper.stats()[ok].scrapes >= 5 and scraper.stats()[dead].errors >= 2)
        m = scraper.get(ok)
        assert not m.stale and m.scraped_at == clock.t
        assert (m.block_size, m.num_gpu_blocks, m.prefix_hits) == (16, 26962, 115312.0)
        assert scraper.get(dead).stale and scraper.get(slow).stale
        assert set(updates) == {ok}
        # the hanging endpoint times out and is counted, without holding up the others
        await wait_for(lambda: scraper.stats()[slow].errors >= 1)
        assert "Timeout" in scraper.stats()[slow].last_error
        assert state["slow_hits"] <= scraper.stats()[slow].errors + 1  # no pile-up of requests

        clock.t += 0.5
        assert not scraper.get(ok).stale
        state["fail"] = True
        errors = scraper.stats()[ok].errors
        await wait_for(lambda: scraper.stats()[ok].errors > errors)
        assert "500" in scraper.stats()[ok].last_error
        # a good scrape in flight when `fail` was set may still land at the current clock: step past stale_after
        clock.t += 1.5  # last good scrape now >= 1.5 s old
        stale = scraper.get(ok)
        assert stale.stale and stale.num_gpu_blocks == 26962  # last values kept, flagged
        state["fail"] = False
        await wait_for(lambda: not scraper.get(ok).stale)

        scraper.set_endpoints([Endpoint(ok)])
        assert set(scraper.snapshot()) == {ok}
        assert scraper.get(dead).stale


async def test_endpoint_added_while_running_and_scrape_all(server):
    url, _ = server
    ok = EndpointId(url)
    scraper = MetricsScraper(interval=10.0)  # polls once at start, then rarely
    assert scraper.stale_after == 40.0 and scraper.timeout == 40.0
    async with scraper:
        scraper.set_endpoints([Endpoint(ok)])
        await wait_for(lambda: scraper.stats()[ok].scrapes == 1)
        await scraper.scrape_all()
        assert scraper.stats()[ok].scrapes == 2
        assert not scraper.get(ok).stale


def test_defaults_and_validation():
    s = MetricsScraper()
    assert (s.interval, s.stale_after, s.timeout) == (0.05, 0.5, 0.5)
    with pytest.raises(ValueError):
        MetricsScraper(interval=0)
