"""Adaptive polling: idle endpoints are not polled, active ones are, and the first request after an idle spell
scrapes first (fake clock; real aiohttp servers on 127.0.0.1)."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from llmd_kserve.metrics.scraper import MetricsScraper
from llmd_kserve.types import Endpoint, EndpointId
from tests.metrics.test_scraper import FakeClock, free_port, wait_for


@pytest.fixture
async def engine():
    state = {"waiting": 0, "hits": 0}

    async def metrics(_req: web.Request) -> web.Response:
        state["hits"] += 1
        return web.Response(text=f'vllm:num_requests_waiting{{model_name="m"}} {state["waiting"]}\n')

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # noqa: SLF001
    yield EndpointId(f"http://127.0.0.1:{port}"), state
    await runner.cleanup()


async def test_idle_not_polled_and_first_request_after_idle_minute_sees_fresh_load(engine):
    eid, state = engine
    dead = EndpointId(f"http://127.0.0.1:{free_port()}")
    clock = FakeClock()
    scraper = MetricsScraper(interval=0.01, stale_after=0.5, clock=clock, timeout=1.0, idle_interval=None,
                             linger=1.0)
    assert scraper.adaptive
    scraper.set_endpoints([Endpoint(eid), Endpoint(dead)])
    async with scraper:
        await wait_for(lambda: scraper._n_idle == 2)  # noqa: SLF001  (first scrape done, both loops asleep)
        hits = state["hits"]
        await asyncio.sleep(0.1)  # ten fixed-rate ticks
        assert state["hits"] == hits == 1  # idle: not polled
        assert not scraper.get(eid).stale and scraper.get(eid).waiting == 0  # idle: the last scrape stands

        state["waiting"] = 7  # load arrives from elsewhere during an idle minute
        clock.t += 60.0
        assert scraper.get(eid).waiting == 0  # what a router without the refresh would route on
        refresh = scraper.refresh_idle()
        assert refresh is not None
        await refresh
        m = scraper.get(eid)
        assert (m.waiting, m.stale, m.scraped_at) == (7, False, clock.t)
        assert scraper.get(dead).stale  # its refresh failed: flagged, so the health filter drops it
        assert scraper.refresh_idle() is None  # fresh now: the next requests do not wait
        # refreshed endpoints are active for `linger` s: polled at the active cadence, so they do not read stale
        # half a second later while the request went elsewhere (the health filter would drop them)
        clock.t += 0.7
        await wait_for(lambda: scraper.get(eid).scraped_at == clock.t)
        assert not scraper.get(eid).stale

        # a request on the endpoint: polled every tick while it runs, idle again `linger` s after it ended
        scraper.started(eid)
        await wait_for(lambda: state["hits"] >= 5)
        assert scraper.poll_interval(eid) == 0.01 and scraper.stale_limit(eid) == 0.5
        scraper.finished(eid)
        assert scraper.active(eid)
        clock.t += 1.5
        assert not scraper.active(eid) and scraper.poll_interval(eid) is None
        await wait_for(lambda: scraper._n_idle == 2)  # noqa: SLF001
        hits = state["hits"]
        await asyncio.sleep(0.05)
        assert state["hits"] == hits


async def test_idle_interval_and_rate_bound():
    clock = FakeClock()
    eps = [Endpoint(EndpointId(f"http://10.0.0.{i}:8000")) for i in range(10)]
    scraper = MetricsScraper(interval=0.01, stale_after=0.5, clock=clock, idle_interval=2.0, max_rate=100.0)
    scraper.set_endpoints(eps)
    assert scraper.poll_interval(eps[0].id) == 2.0 and scraper.stale_limit(eps[0].id) == 8.0
    for e in eps:
        scraper.started(e.id)
    clock.t += 0.02  # the active count is re-read once a tick
    # ten active endpoints under 100 scrapes/s: each every 0.1 s, stale after 4 of those
    assert scraper.active_interval() == pytest.approx(0.1)
    assert scraper.stale_limit(eps[0].id) == 0.5
    scraper.max_rate = 10.0
    clock.t += 0.02
    assert scraper.active_interval() == pytest.approx(1.0) and scraper.stale_limit(eps[0].id) == 4.0


def test_fixed_rate_by_default_and_validation():
    s = MetricsScraper(interval=0.05)
    assert not s.adaptive and s.active(EndpointId("http://x")) and s.refresh_idle() is None
    with pytest.raises(ValueError):
        MetricsScraper(interval=0.05, idle_interval=0.01)
    with pytest.raises(ValueError):
        MetricsScraper(interval=0.05, idle_interval=1.0, max_rate=0)
