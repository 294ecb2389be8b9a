"""Scorer ``active-request-scorer``: fewer requests in flight from this router is better."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from llmd_kserve.plugins.base import CycleState, PluginContext, PluginParams, Scores
from llmd_kserve.scheduling.inflight_load import inflight_scores
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
        return inflight_scores(state, endpoints, "requests")
