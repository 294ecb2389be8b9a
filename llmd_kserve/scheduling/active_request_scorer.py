"""Scorer ``active-request-scorer``: fewer requests in flight from this router is better."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from llmd_kserve.plugins.base import CycleState, PluginContext, PluginParams, Scores
from llmd_kserve.types import EndpointState


class ActiveRequestScorer:
    """Score = ``(max - active) / max`` over the candidates, from the in-flight-load producer (updated at once,
    unlike scraped metrics); 1.0 for all when nothing is in flight."""

    type: ClassVar[str] = "active-request-scorer"
    kind: ClassVar[str] = "scorer"

    class Params(PluginParams):
        pass

    requires: tuple[str, ...] = ("inflight-load-producer",)

    def __init__(self, name: str, params: Params, ctx: PluginContext) -> None:
        self.name = name

    def score(self, state: CycleState, endpoints: Sequence[EndpointState]) -> Scores:
        load = state.inflight or {}
        counts = [load.get(e.endpoint.id, (0, 0))[0] for e in endpoints]
        hi = max(counts, default=0)
        if hi <= 0:
            return {e.endpoint.id: 1.0 for e in endpoints}
        return {e.endpoint.id: (hi - c) / hi for e, c in zip(endpoints, counts, strict=True)}
