"""Scorer ``queue-scorer``: fewer waiting requests (``vllm:num_requests_waiting``) is better."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from llmd_kserve.plugins.base import CycleState, PluginContext, PluginParams, Scores
from llmd_kserve.types import NO_LOAD, EndpointState


class QueueScorer:
    """Min-max normalised over the candidates, as the Inference Extension's queue scorer:
    ``(max - queue) / (max - min)``; 1.0 for every endpoint when all queues are equal.

    ``queue`` is the scraped ``waiting`` count plus, with ``countUnscraped`` (default), the requests this router
    sent the endpoint since that scrape and that are still in flight (``state.unscraped``, from the in-flight-load
    producer). Without it the scraped queues stand still for a whole scrape interval, and min-max scaling turns a
    one-request difference into the full weight: every request until the next scrape herds onto the same endpoint.
    """

    type: ClassVar[str] = "queue-scorer"
    kind: ClassVar[str] = "scorer"

    class Params(PluginParams):
        count_unscraped: bool = True
        """Add the router's own requests sent since each endpoint's last scrape to its scraped queue."""

    def __init__(self, name: str, params: Params, ctx: PluginContext) -> None:
        self.name = name
        self._unscraped = params.count_unscraped
        self.requires: tuple[str, ...] = ("inflight-load-producer",) if params.count_unscraped else ()

    def score(self, state: CycleState, endpoints: Sequence[EndpointState]) -> Scores:
        if not endpoints:
            return {}
        extra = (state.unscraped or {}) if self._unscraped else {}
        queues = [e.metrics.waiting + extra.get(e.endpoint.id, NO_LOAD).requests for e in endpoints]
        lo, hi = min(queues), max(queues)
        if hi == lo:
            return {e.endpoint.id: 1.0 for e in endpoints}
        span = hi - lo
        return {e.endpoint.id: (hi - q) / span for e, q in zip(endpoints, queues, strict=True)}
