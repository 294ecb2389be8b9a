"""Scorer ``active-request-scorer``: fewer requests in flight from this router is better."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import ClassVar

from pydantic import Field

from llmd_kserve.plugins.base import CycleState, PluginContext, PluginParams, Scores
from llmd_kserve.types import NO_LOAD, EndpointState

log = logging.getLogger(__name__)


class ActiveRequestScorer:
    """llm-d's scorer over the in-flight-load producer's request counts (updated at once, unlike scraped
    metrics): an endpoint with at most ``idleThreshold`` requests scores 1.0; a busier one
    ``(max - active) / max * maxBusyScore``, ``max`` being the busiest candidate's count. With the defaults (0, 1.0)
    that is ``(max - active) / max`` for every endpoint, 1.0 for all when nothing is in flight."""

    type: ClassVar[str] = "active-request-scorer"
    kind: ClassVar[str] = "scorer"

    class Params(PluginParams):
        idle_threshold: int = Field(0, ge=0)
        """Requests at or below which an endpoint counts as idle and scores 1.0."""
        max_busy_score: float = Field(1.0, ge=0.0, le=1.0)
        """Best score of a busy endpoint (below 1.0: a gap between idle and busy endpoints)."""
        request_timeout: str | None = None
        """Deprecated in llm-d and ignored: ``inflight-load-producer`` tracks requests (``requestTimeoutS``)."""
        in_flight_load_producer_name: str = ""
        """The ``inflight-load-producer`` to read; there is one request count per router, whichever is named."""
        producer_refs: ClassVar[dict[str, tuple[str, ...]]] = {
            "in_flight_load_producer_name": ("inflight-load-producer",)}

    requires: tuple[str, ...] = ("inflight-load-producer",)

    def __init__(self, name: str, params: Params, ctx: PluginContext) -> None:
        self.name = name
        self._idle = params.idle_threshold
        self._busy = params.max_busy_score
        if params.request_timeout is not None:
            log.warning("%s: requestTimeout is deprecated and ignored; set requestTimeoutS on inflight-load-producer",
                        name)

    def score(self, state: CycleState, endpoints: Sequence[EndpointState]) -> Scores:
        load = state.inflight or {}
        counts = [load.get(e.endpoint.id, NO_LOAD).requests for e in endpoints]
        hi = max(counts, default=0)
        return {e.endpoint.id: 1.0 if n <= self._idle else (hi - n) / hi * self._busy
                for e, n in zip(endpoints, counts, strict=True)}
