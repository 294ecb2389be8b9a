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

from llmd_kserve.lean_http import StreamClient
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
        self._full_names: dict[EndpointId, frozenset[str]] = {}  # wanted samples the last full page had
        self._unfiltered_until: dict[EndpointId, float] = {}  # the filter failed: full pages until then
        self._paths = (path, f"{path}{'&' if '?' in path else '?'}{_QUERY}")  # (full page, filtered page)
        self.http = StreamClient(max_idle=2)
        """Pages are fetched with the lean keep-alive client (``lean_http``); ``close`` drops its connections."""

    async def get(self, eid: EndpointId, timeout: float) -> EndpointMetrics:
        """The endpoint's metrics now; raises (OSError, TimeoutError, ValueError, ArithmeticError) when the page
        cannot be had or parsed."""
        known = self._full_names.get(eid)
        filtered = (self.name_filter and known is not None
                    and self.clock() >= self._unfiltered_until.get(eid, -math.inf))
        try:
            metrics, seen = parse_vllm_page(await self._fetch(eid, filtered, timeout), self.clock())
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
            metrics, seen = parse_vllm_page(await self._fetch(eid, False, timeout), self.clock())
        if not filtered:
            self._full_names[eid] = seen
        return metrics

    def forget(self, eid: EndpointId) -> None:
        self._full_names.pop(eid, None)
        self._unfiltered_until.pop(eid, None)

    def close(self) -> None:
        self.http.close()

    async def _fetch(self, eid: EndpointId, filtered: bool, timeout: float) -> str:
        """One page of ``eid``: the full one, or only :data:`SCRAPE_NAMES` (``?name[]=...``)."""
        path = self._paths[filtered]
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
