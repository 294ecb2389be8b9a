"""One endpoint's metrics page, fetched and parsed: full or filtered (``?name[]=``).

After one full page an endpoint is asked for only the samples the parser reads (``?name[]=...``, as
prometheus_client's exposition app honours; servers that ignore it send the full page, parsed as before) and with
``Accept-Encoding: identity`` (no gzip to undo). A filtered page that lacks a sample the full page had (a server
whose filter misses some collectors), or an error status for it, is dropped: the full page is fetched at once, and
for ``refilter_after`` s.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from urllib.parse import urlencode

import aiohttp
from yarl import URL

from llmd_kserve.lean_http import StreamClient, address
from llmd_kserve.metrics.parse import SCRAPE_NAMES, parse_vllm_page
from llmd_kserve.types import EndpointId, EndpointMetrics

log = logging.getLogger(__name__)
_QUERY = urlencode([("name[]", n) for n in SCRAPE_NAMES])
_HEADERS = {"Accept-Encoding": "identity"}


class StatusError(ValueError):
    """A metrics page answered with a status other than 200."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class MetricsPages:
    """Fetches and parses endpoints' pages; remembers per endpoint what its full page had and whether its filter
    works."""

    def __init__(self, path: str, clock: Callable[[], float], *, name_filter: bool = True,
                 refilter_after: float = 300.0) -> None:
        self.path, self.clock = path, clock
        self.name_filter, self.refilter_after = name_filter, refilter_after
        self._urls: dict[EndpointId, tuple[URL, URL]] = {}  # (full page, filtered page), parsed once
        self._full_names: dict[EndpointId, frozenset[str]] = {}  # wanted samples the last full page had
        self._unfiltered_until: dict[EndpointId, float] = {}  # the filter failed: full pages until then
        self._timeout = aiohttp.ClientTimeout(total=None)  # one object, not one per scrape
        self.http = StreamClient(max_idle=2)
        """Endpoints are scraped with this lean client (keep-alive; no aiohttp request machinery)."""

    async def get(self, eid: EndpointId, timeout: float, session: aiohttp.ClientSession | None) -> EndpointMetrics:
        """The endpoint's metrics now; raises (aiohttp.ClientError, OSError, TimeoutError, ValueError,
        ArithmeticError, EOFError) when the page cannot be had or parsed."""
        known = self._full_names.get(eid)
        filtered = (self.name_filter and known is not None
                    and self.clock() >= self._unfiltered_until.get(eid, -math.inf))
        try:
            metrics, seen = parse_vllm_page(await self._fetch(eid, filtered, timeout, session), self.clock())
            lost = sorted(known - seen) if filtered and known is not None else []
            why = f"lacks {', '.join(lost)}"
        except StatusError as exc:  # a server that refuses the query
            if not filtered:
                raise
            lost, why = ["?"], f"answered HTTP {exc.status}"
        if lost:
            if eid not in self._unfiltered_until:
                log.info("%s: its filtered /metrics page %s; scraping the full page", eid, why)
            self._unfiltered_until[eid] = self.clock() + self.refilter_after
            filtered = False
            metrics, seen = parse_vllm_page(await self._fetch(eid, False, timeout, session), self.clock())
        if not filtered:
            self._full_names[eid] = seen
        return metrics

    def forget(self, eid: EndpointId) -> None:
        self._urls.pop(eid, None)
        self._full_names.pop(eid, None)
        self._unfiltered_until.pop(eid, None)

    async def _fetch(self, eid: EndpointId, filtered: bool, timeout: float,
                     session: aiohttp.ClientSession | None) -> str:
        """One page of ``eid``: the full one, or only :data:`SCRAPE_NAMES` (``?name[]=...``)."""
        urls = self._urls.get(eid)
        if urls is None:
            full = eid.rstrip("/") + self.path
            urls = self._urls[eid] = (URL(full), URL(f"{full}{'&' if '?' in full else '?'}{_QUERY}"))
        if address(eid) is not None:
            path = f"{self.path}{'&' if '?' in self.path else '?'}{_QUERY}" if filtered else self.path
            return await self._fetch_plain(eid, path, timeout)
        if session is None:
            raise RuntimeError("MetricsScraper not started")
        if self._timeout.total != timeout:
            self._timeout = aiohttp.ClientTimeout(total=timeout)
        async with session.get(urls[filtered], timeout=self._timeout, headers=_HEADERS) as resp:
            if resp.status != 200:
                raise StatusError(resp.status, f"HTTP {resp.status} {resp.reason or ''} from {resp.url}")
            return (await resp.read()).decode("utf-8")

    async def _fetch_plain(self, eid: EndpointId, path: str, timeout: float) -> str:
        async with asyncio.timeout(timeout):
            exchange = await self.http.request(eid, path, b"", _HEADERS, method="GET")
            try:
                body = await exchange.read_all(timeout)
            finally:
                exchange.release()
        status = exchange.head.result().status
        if status != 200:
            raise StatusError(status, f"HTTP {status} from {eid.rstrip('/')}{path}")
        return body.decode("utf-8")
