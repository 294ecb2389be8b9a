"""Scorer ``token-load-scorer``: fewer uncached prompt tokens in flight from this router is better."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from llmd_kserve.plugins.base import CycleState, PluginContext, PluginParams, Scores
from llmd_kserve.scheduling.inflight_load import inflight_scores
from llmd_kserve.types import EndpointState


class TokenLoadScorer:
    """Score = ``(max - tokens) / max`` over the candidates, where tokens are the uncached prompt tokens the
    router sent each endpoint and that have not finished (in-flight-load producer); 1.0 for all when idle.
    Unlike ``active-request-scorer`` it tells one 8k-token prompt from one 20-token prompt."""

    type: ClassVar[str] = "token-load-scorer"
    kind: ClassVar[str] = "scorer"

    class Params(PluginParams):
        pass

    requires: tuple[str, ...] = ("inflight-load-producer",)

    def __init__(self, name: str, params: Params, ctx: PluginContext) -> None:
        self.name = name

    def score(self, state: CycleState, endpoints: Sequence[EndpointState]) -> Scores:
        return inflight_scores(state, endpoints, "tokens")
