"""Filter ``health-filter``: drop endpoints whose metrics are stale (never down to no endpoint at all)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import ClassVar

from pydantic import Field

from llmd_kserve.plugins.base import CycleState, PluginContext, PluginParams
from llmd_kserve.types import EndpointState

logger = logging.getLogger(__name__)


class HealthFilter:
    """Keeps endpoints with a fresh metrics snapshot: ``metrics.stale`` is False and, when ``maxStalenessS`` is
    set, the scrape is no older than that on the context clock.

    Fallback: when *every* candidate is stale (the scraper stalled, or all endpoints just started) the filter
    keeps them all — routing on old numbers beats refusing every request; a warning is logged once per episode.
    """

    type: ClassVar[str] = "health-filter"
    kind: ClassVar[str] = "filter"

    class Params(PluginParams):
        max_staleness_s: float | None = Field(None, gt=0)
        """Also treat a snapshot older than this as stale (None: trust the scraper's ``stale`` flag)."""

    requires: tuple[str, ...] = ()

    def __init__(self, name: str, params: Params, ctx: PluginContext) -> None:
        self.name = name
        self._max_age = params.max_staleness_s
        self._clock = ctx.clock
        self._all_stale = False

    def filter(self, state: CycleState, endpoints: Sequence[EndpointState]) -> Sequence[EndpointState]:
        if self._max_age is None:
            fresh = [e for e in endpoints if not e.metrics.stale]
        else:
            oldest = self._clock() - self._max_age
            fresh = [e for e in endpoints if not e.metrics.stale and e.metrics.scraped_at >= oldest]
        if fresh or not endpoints:
            self._all_stale = False
            return fresh
        if not self._all_stale:
            logger.warning("all %d candidate endpoints have stale metrics; routing among all of them", len(endpoints))
            self._all_stale = True
        return endpoints
