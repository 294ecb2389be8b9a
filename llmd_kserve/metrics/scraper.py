"""Async scraper: polls every endpoint's ``/metrics`` concurrently and keeps its latest snapshot, marked stale when old.

One polling task per endpoint (a slow or dead endpoint never delays the others), one shared aiohttp session with
keep-alive, a per-request timeout, and error counters. Ticks are fixed-rate; ticks missed while a request was in
flight are skipped, never bunched. A snapshot is stale when its last good scrape is older than ``stale_after``
(by the injected clock) - computed when read, so no timer is needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import aiohttp

from llmd_kserve.defaults import SCRAPE_INTERVAL_S
from llmd_kserve.metrics.parse import parse_vllm_metrics
from llmd_kserve.types import Endpoint, EndpointId, EndpointMetrics

log = logging.getLogger(__name__)

_STALE = EndpointMetrics()


@dataclass(frozen=True, slots=True)
class ScrapeStats:
    """Counters of one endpoint's scrapes."""

    scrapes: int = 0
    errors: int = 0
    last_error: str | None = None


class MetricsScraper:
    """Keeps an :class:`EndpointMetrics` per endpoint, refreshed every ``interval`` seconds.

    ``stale_after`` defaults to ``max(4 * interval, 0.5)`` s and ``timeout`` (per request) to ``stale_after``.
    ``on_update(endpoint_id, metrics)`` is called after each good scrape.
    """

    def __init__(
        self,
        interval: float = SCRAPE_INTERVAL_S,
        stale_after: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        *,
        timeout: float | None = None,
        path: str = "/metrics",
        session: aiohttp.ClientSession | None = None,
        on_update: Callable[[EndpointId, EndpointMetrics], None] | None = None,
    ) -> None:
        if interval <= 0:
            raise ValueError("interval must be > 0")
        self.interval = interval
        self.stale_after = stale_after if stale_after is not None else max(4 * interval, 0.5)
        self.timeout = timeout if timeout is not None else self.stale_after
        self.clock = clock
        self.path = path
        self._session = session
        self._own_session = session is None
        self._on_update = on_update
        self._endpoints: dict[EndpointId, Endpoint] = {}
        self._metrics: dict[EndpointId, EndpointMetrics] = {}
        self._stats: dict[EndpointId, ScrapeStats] = {}
        self._tasks: dict[EndpointId, asyncio.Task[None]] = {}
        self._failing: dict[EndpointId, str] = {}
        self._running = False

    # --- endpoints and snapshots -----------------------------------------------------------------------------------

    def set_endpoints(self, endpoints: Sequence[Endpoint]) -> None:
        """Replace the endpoint list: new ones start polling, removed ones stop and are forgotten."""
        wanted = {e.id: e for e in endpoints}
        for eid in list(self._endpoints):
            if eid not in wanted:
                del self._endpoints[eid]
                self._metrics.pop(eid, None)
                self._stats.pop(eid, None)
                task = self._tasks.pop(eid, None)
                if task is not None:
                    task.cancel()
        for eid, ep in wanted.items():
            if eid not in self._endpoints:
                self._endpoints[eid] = ep
                self._stats[eid] = ScrapeStats()
                if self._running:
                    self._launch(eid)

    def get(self, endpoint_id: EndpointId) -> EndpointMetrics:
        """Latest snapshot; ``stale=True`` if never scraped or older than ``stale_after``."""
        m = self._metrics.get(endpoint_id)
        if m is None:
            return _STALE
        if self.clock() - m.scraped_at > self.stale_after:
            return dataclasses.replace(m, stale=True)
        return m

    def snapshot(self) -> dict[EndpointId, EndpointMetrics]:
        return {eid: self.get(eid) for eid in self._endpoints}

    def stats(self) -> dict[EndpointId, ScrapeStats]:
        return dict(self._stats)

    # --- lifecycle -------------------------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._running:
            return
        if self._session is None:
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        self._running = True
        for eid in self._endpoints:
            self._launch(eid)

    async def stop(self) -> None:
        self._running = False
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> MetricsScraper:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _launch(self, eid: EndpointId) -> None:
        self._tasks[eid] = asyncio.get_running_loop().create_task(self._poll(eid), name=f"metrics {eid}")

    # --- polling ---------------------------------------------------------------------------------------------------

    async def _poll(self, eid: EndpointId) -> None:
        loop = asyncio.get_running_loop()
        next_tick = loop.time()
        while True:
            try:
                await self.scrape_one(eid)
            except Exception as exc:  # never let one bad answer end this endpoint's polling
                self._record_error(eid, f"{type(exc).__name__}: {exc}")
            next_tick += self.interval
            delay = next_tick - loop.time()
            if delay < 0:  # fell behind: skip missed ticks
                next_tick = loop.time()
                delay = 0.0
            await asyncio.sleep(delay)

    async def scrape_all(self) -> None:
        """Scrape every endpoint once, concurrently (e.g. before serving the first request)."""
        await asyncio.gather(*(self.scrape_one(eid) for eid in list(self._endpoints)))

    async def scrape_one(self, eid: EndpointId) -> bool:
        """Scrape one endpoint now; True on success. Needs :meth:`start` (or an injected session)."""
        if self._session is None:
            raise RuntimeError("MetricsScraper not started")
        url = eid.rstrip("/") + self.path
        try:
            async with self._session.get(url, timeout=aiohttp.ClientTimeout(total=self.timeout)) as resp:
                if resp.status != 200:
                    raise aiohttp.ClientResponseError(resp.request_info, (), status=resp.status,
                                                        message=resp.reason or "")
                text = await resp.text()
            metrics = parse_vllm_metrics(text, self.clock())
        except (aiohttp.ClientError, TimeoutError, ValueError, ArithmeticError, UnicodeDecodeError) as exc:
            self._record_error(eid, f"{type(exc).__name__}: {exc}")
            return False
        if eid not in self._endpoints:  # removed while in flight
            return False
        self._metrics[eid] = metrics
        st = self._stats[eid]
        self._stats[eid] = ScrapeStats(st.scrapes + 1, st.errors, st.last_error)
        if self._failing.pop(eid, None) is not None:
            log.info("scraping %s works again", eid)
        if self._on_update is not None:
            self._on_update(eid, metrics)
        return True

    def _record_error(self, eid: EndpointId, why: str) -> None:
        st = self._stats.get(eid)
        if st is None:
            return
        self._stats[eid] = ScrapeStats(st.scrapes, st.errors + 1, why)
        kind = why.partition(":")[0]  # messages of garbage pages differ every time: dedupe by the error's type
        if self._failing.get(eid) != kind:  # once per episode and error type
            self._failing[eid] = kind
            log.warning("scraping %s failed: %s", eid, why[:300])
