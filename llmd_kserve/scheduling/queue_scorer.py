"""Scorer ``queue-scorer``: fewer waiting requests (``vllm:num_requests_waiting``) is better."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from llmd_kserve.plugins.base import CycleState, PluginContext, PluginParams, Scores
from llmd_kserve.types import EndpointState


class QueueScorer:
    """Min-max normalised over the candidates, as the Inference Extension's queue scorer:
    ``(max - waiting) / (max - min)``; 1.0 for every endpoint when all queues are equal."""

    type: ClassVar[str] = "queue-scorer"
    kind: ClassVar[str] = "scorer"

    class Params(PluginParams):
        pass

    requires: tuple[str, ...] = ()

    def __init__(self, name: str, params: Params, ctx: PluginContext) -> None:
        self.name = name

    def score(self, state: CycleState, endpoints: Sequence[EndpointState]) -> Scores:
        if not endpoints:
            return {}
        queues = [e.metrics.waiting for e in endpoints]
        lo, hi = min(queues), max(queues)
        if hi == lo:
            return {e.endpoint.id: 1.0 for e in endpoints}
        span = hi - lo
        return {e.endpoint.id: (hi - q) / span for e, q in zip(endpoints, queues, strict=True)}
