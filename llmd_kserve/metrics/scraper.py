"""Async scraper: polls every endpoint's ``/metrics`` concurrently and keeps its latest snapshot, marked stale when old.

One polling task per endpoint (a slow or dead endpoint never delays the others), kept-alive connections (see
below), a per-request timeout, and error counters. Ticks are fixed-rate; ticks missed while a request was in
flight are skipped, never bunched. A snapshot is stale when its last good scrape is older than the endpoint's
staleness limit (by the injected clock) - computed when read, so no timer is needed.

Adaptive: an endpoint is *active* while the router has requests on it (:meth:`started` / :meth:`finished`) or
finished one less than ``linger`` s ago; active endpoints are polled every ``interval`` s (stretched so that all
active endpoints together stay under ``max_rate`` scrapes/s), idle ones every ``idle_interval`` s (None: not at
all). The staleness limit is ``stale_after`` or 4 polls of the endpoint's current cadence, whichever is longer.
Before the first request after an idle spell the router awaits :meth:`refresh_idle`, which scrapes every idle
endpoint whose snapshot is older than ``stale_after`` - so it routes on fresh load data, not on the idle-time poll.

Pages are fetched and parsed by :class:`~llmd_kserve.metrics.pages.MetricsPages` (filtered ``?name[]=`` pages after
one full page, no gzip).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from llmd_kserve.defaults import SCRAPE_INTERVAL_S
from llmd_kserve.metrics.pages import MetricsPages
from llmd_kserve.types import Endpoint, EndpointId, EndpointMetrics

log = logging.getLogger(__name__)

_STALE = EndpointMetrics()
FIXED_RATE = -1.0
"""``idle_interval`` default: idle endpoints are polled like active ones (no adaptation)."""


@dataclass(frozen=True, slots=True)
class ScrapeStats:
    """Counters of one endpoint's scrapes."""

    scrapes: int = 0
    errors: int = 0
    last_error: str | None = None


class MetricsScraper:
    """Keeps an :class:`EndpointMetrics` per endpoint, refreshed every ``interval`` seconds.

    ``stale_after`` defaults to ``max(4 * interval, 0.5)`` s and ``timeout`` (per request) to ``stale_after``.
    ``on_update(endpoint_id, metrics)`` is called after each good scrape. Without ``idle_interval`` every endpoint
    is polled at the fixed rate (no adaptation).
    """

    def __init__(
        self,
        interval: float = SCRAPE_INTERVAL_S,
        stale_after: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        *,
        timeout: float | None = None,
        path: str = "/metrics",
        on_update: Callable[[EndpointId, EndpointMetrics], None] | None = None,
        idle_interval: float | None = FIXED_RATE,
        linger: float = 1.0,
        max_rate: float | None = None,
        refresh_timeout: float = 0.5,
        name_filter: bool = True,
        refilter_after: float = 300.0,
    ) -> None:
        if interval <= 0:
            raise ValueError("interval must be > 0")
        if idle_interval == FIXED_RATE:
            idle_interval = interval
        if idle_interval is not None and idle_interval < interval:
            raise ValueError("idle_interval must be >= interval (or None: no polling while idle)")
        if max_rate is not None and max_rate <= 0:
            raise ValueError("max_rate must be > 0")
        self.idle_interval = idle_interval
        self.linger = linger
        self.max_rate = max_rate
        self.refresh_timeout = refresh_timeout
        self._inflight: dict[EndpointId, int] = {}
        self._last_done: dict[EndpointId, float] = {}
        self._wake: dict[EndpointId, asyncio.Event] = {}
        self._refreshing: asyncio.Task[None] | None = None
        self._n_idle = 0  # endpoints polled at the idle cadence right now (the request path's O(1) check)
        self._active_every = (-math.inf, interval)  # (when computed, active_interval): O(endpoints) once a tick
        self.interval = interval
        self.stale_after = stale_after if stale_after is not None else max(4 * interval, 0.5)
        self.timeout = timeout if timeout is not None else self.stale_after
        self.clock = clock
        self.path = path
        self.pages = MetricsPages(path, lambda: self.clock(), name_filter=name_filter,
                                  refilter_after=refilter_after)
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
                self._inflight.pop(eid, None)
                self._last_done.pop(eid, None)
                self._wake.pop(eid, None)
                self.pages.forget(eid)
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
        age = self.clock() - m.scraped_at
        if age > self.stale_after and age > self.stale_limit(endpoint_id):  # the cheap test first: per request
            return dataclasses.replace(m, stale=True)
        return m

    # --- activity (the router's requests) --------------------------------------------------------------------------

    def started(self, eid: EndpointId) -> None:
        """A request was sent to ``eid``: poll it fast from now on (at once if it was idle)."""
        self._inflight[eid] = self._inflight.get(eid, 0) + 1
        wake = self._wake.get(eid)
        if wake is not None:
            wake.set()

    def finished(self, eid: EndpointId) -> None:
        """A request on ``eid`` ended; the endpoint stays active ``linger`` s after its last one."""
        n = self._inflight.get(eid, 0) - 1
        if n > 0:
            self._inflight[eid] = n
        else:
            self._inflight.pop(eid, None)
        self._last_done[eid] = self.clock()

    @property
    def adaptive(self) -> bool:
        """False in fixed-rate mode (every endpoint polled every ``interval`` s)."""
        return self.idle_interval != self.interval

    def active(self, eid: EndpointId) -> bool:
        if not self.adaptive:
            return True
        return eid in self._inflight or self.clock() - self._last_done.get(eid, -math.inf) < self.linger

    def active_interval(self) -> float:
        """Seconds between two polls of an active endpoint: ``interval``, or longer to keep under ``max_rate``."""
        if self.max_rate is None:
            return self.interval
        now = self.clock()
        at, every = self._active_every
        if now - at >= self.interval:  # recount at most once a tick, so polling stays O(endpoints) per tick
            n = sum(1 for e in self._endpoints if self.active(e)) or 1
            every = max(self.interval, n / self.max_rate)
            self._active_every = (now, every)
        return every

    def poll_interval(self, eid: EndpointId) -> float | None:
        """The cadence ``eid`` is polled at now (None: not polled until a request wakes it)."""
        return self.active_interval() if self.active(eid) else self.idle_interval

    def stale_limit(self, eid: EndpointId) -> float:
        every = self.poll_interval(eid)
        return math.inf if every is None else max(self.stale_after, 4 * every)

    def refresh_idle(self) -> Awaitable[None] | None:
        """Something to await before routing when idle endpoints hold old snapshots (None - the usual case - when
        there is none): scrapes them all at once, at most ``refresh_timeout`` s; concurrent callers share it."""
        if self._n_idle == 0 and self._refreshing is None:
            return None
        if self._refreshing is None:
            now = self.clock()
            old = [e for e in self._endpoints if not self.active(e)
                   and now - self._metrics.get(e, _STALE).scraped_at > self.stale_after]
            if not old:
                return None
            for e in old:  # active now (the request is coming), so a failed refresh reads as stale
                self._last_done[e] = now
            self._refreshing = asyncio.get_running_loop().create_task(self._refresh(old))
        return asyncio.shield(self._refreshing)

    async def _refresh(self, eids: list[EndpointId]) -> None:
        try:
            async with asyncio.timeout(self.refresh_timeout):
                await asyncio.gather(*(self.scrape_one(e) for e in eids), return_exceptions=True)
        except TimeoutError:
            log.info("refreshing %d idle endpoints took over %g s; routing on what is known", len(eids),
                     self.refresh_timeout)
        finally:
            self._refreshing = None
            for e in eids:  # active for `linger` s now: poll at the active cadence, or they read stale after
                wake = self._wake.get(e)  # stale_after while their loops still sleep the idle cadence
                if wake is not None:
                    wake.set()

    def snapshot(self) -> dict[EndpointId, EndpointMetrics]:
        return {eid: self.get(eid) for eid in self._endpoints}

    def stats(self) -> dict[EndpointId, ScrapeStats]:
        return dict(self._stats)

    # --- lifecycle -------------------------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._running:
            return
        self._running = True
        for eid in self._endpoints:
            self._launch(eid)

    async def stop(self) -> None:
        self._running = False
        tasks = list(self._tasks.values())
        if self._refreshing is not None:
            tasks.append(self._refreshing)
            self._refreshing = None
        self._tasks.clear()
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self.pages.close()

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
        wake = self._wake.setdefault(eid, asyncio.Event())
        next_tick = loop.time()
        while True:
            try:
                await self.scrape_one(eid)
            except Exception as exc:  # never let one bad answer end this endpoint's polling
                self._record_error(eid, f"{type(exc).__name__}: {exc}")
            every = self.poll_interval(eid)
            next_tick += every if every is not None else 0.0
            delay = next_tick - loop.time()
            if delay < 0:  # fell behind: skip missed ticks
                next_tick = loop.time()
                delay = 0.0
            if self.active(eid):
                await asyncio.sleep(delay)
                continue
            wake.clear()  # idle: sleep the idle cadence, or until a request is sent to this endpoint
            self._n_idle += 1
            try:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(None if every is None else delay):
                        await wake.wait()
            finally:
                self._n_idle -= 1
            next_tick = loop.time()

    async def scrape_all(self) -> None:
        """Scrape every endpoint once, concurrently (e.g. before serving the first request)."""
        await asyncio.gather(*(self.scrape_one(eid) for eid in list(self._endpoints)))

    async def scrape_one(self, eid: EndpointId) -> bool:
        """Scrape one endpoint now; True on success (works before :meth:`start` too)."""
        try:
            metrics = await self.pages.get(eid, self.timeout)
        except (OSError, TimeoutError, ValueError, ArithmeticError) as exc:
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
