"""The scraper asks for only the samples it reads (``?name[]=``, no gzip) once it has seen a full page, and falls
back to the full page when a filtered one lacks something (real aiohttp servers on 127.0.0.1, fake clock), over an injected
aiohttp session."""

from __future__ import annotations

import pytest
from aiohttp import web

from llmd_kserve.metrics.parse import SCRAPE_NAMES, parse_vllm_metrics
from llmd_kserve.metrics.scraper import MetricsScraper
from llmd_kserve.types import Endpoint, EndpointId


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _sample_name(line: str) -> str:
    return line.split("{", 1)[0].split(" ", 1)[0]


@pytest.fixture
async def servers(metrics_text):
    """Three vLLM-page servers: ``filters`` (by exact sample name, as prometheus_client does), ``ignores`` (the
    full page whatever the query, as vLLM's instrumentator route does), ``broken`` (an empty filtered page: a
    filter that misses the collector) and ``refuses`` (400 for a query)."""
    seen: list[tuple[str, str, tuple[str, ...], str]] = []

    def handler(kind: str):
        async def metrics(req: web.Request) -> web.Response:
            names = tuple(req.query.getall("name[]", ()))
            seen.append((kind, req.path, names, req.headers.get("Accept-Encoding", "")))
            text = metrics_text
            if names and kind == "filters":
                text = "".join(ln + "\n" for ln in metrics_text.splitlines()
                               if not ln.startswith("#") and _sample_name(ln) in names)
            elif names and kind == "broken":
                text = ""
            elif names and kind == "refuses":
                return web.Response(status=400, text="unknown parameter")
            return web.Response(text=text, content_type="text/plain")
        return metrics

    app = web.Application()
    for kind in ("filters", "ignores", "broken", "refuses"):
        app.router.add_get(f"/{kind}/metrics", handler(kind))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # noqa: SLF001
    yield f"http://127.0.0.1:{port}", seen
    await runner.cleanup()


async def test_filtered_after_one_full_page_same_metrics(servers, metrics_text):
    base, seen = servers
    clock = FakeClock()
    want = parse_vllm_metrics(metrics_text, clock.t)
    scraper = MetricsScraper(interval=10.0, clock=clock)
    eids = [EndpointId(f"{base}/{k}") for k in ("filters", "ignores")]
    scraper.set_endpoints([Endpoint(e) for e in eids])
    for _ in range(3):
        for e in eids:
            assert await scraper.scrape_one(e)
            assert scraper.get(e) == want
    await scraper.stop()
    for kind in ("filters", "ignores"):
        mine = [x for x in seen if x[0] == kind]
        assert [bool(names) for _, _, names, _ in mine] == [False, True, True]  # one full page, then filtered
        assert all(names == SCRAPE_NAMES for _, _, names, _ in mine[1:])
        assert all(enc == "identity" for *_, enc in mine)


@pytest.mark.parametrize("kind", ["broken", "refuses"])
async def test_filtered_page_missing_samples_falls_back_to_the_full_page(servers, metrics_text, kind):
    base, seen = servers
    clock = FakeClock()
    eid = EndpointId(f"{base}/{kind}")
    scraper = MetricsScraper(interval=10.0, clock=clock, refilter_after=60.0)
    scraper.set_endpoints([Endpoint(eid)])
    for _ in range(3):
        assert await scraper.scrape_one(eid)
        assert scraper.get(eid) == parse_vllm_metrics(metrics_text, clock.t)
    # full, filtered (empty: dropped), full at once; then full pages only, until refilter_after has passed
    assert [bool(x[2]) for x in seen] == [False, True, False, False]
    clock.t += 61.0
    assert await scraper.scrape_one(eid)
    assert [bool(x[2]) for x in seen[4:]] == [True, False]  # tried again, still broken: full page
    assert scraper.get(eid) == parse_vllm_metrics(metrics_text, clock.t)
    assert scraper.stats()[eid].errors == 0
    await scraper.stop()


async def test_name_filter_off_always_asks_the_full_page(servers):
    base, seen = servers
    scraper = MetricsScraper(interval=10.0, name_filter=False)
    eid = EndpointId(f"{base}/filters")
    scraper.set_endpoints([Endpoint(eid)])
    for _ in range(2):
        assert await scraper.scrape_one(eid)
    await scraper.stop()
    assert [x[2] for x in seen] == [(), ()]
