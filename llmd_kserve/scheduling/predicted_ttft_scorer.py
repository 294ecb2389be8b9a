"""Scorer ``predicted-ttft-scorer``: shorter predicted time to first token (engine latency model) is better."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from llmd_kserve.plugins.base import CycleState, PluginContext, Scores
from llmd_kserve.scheduling.ttft import TTFTEstimator, TTFTParams
from llmd_kserve.types import EndpointState


class PredictedTTFTScorer:
    """Predicts each candidate's TTFT with :func:`~llmd_kserve.scheduling.ttft.estimate_ttft` (backlog of queued
    prompt tokens + this request's uncached tokens, timed by ``ctx.profile``) and scores ``best / predicted``:
    1.0 for the fastest endpoint, 0.5 for one twice as slow. A ratio, not min-max, so that a 1 ms difference
    between two nearly idle endpoints doesn't swing the score across its whole range."""

    type: ClassVar[str] = "predicted-ttft-scorer"
    kind: ClassVar[str] = "scorer"

    class Params(TTFTParams):
        pass

    def __init__(self, name: str, params: Params, ctx: PluginContext) -> None:
        self.name = name
        self.params = params
        self._ttft = TTFTEstimator(params, ctx)
        self.requires = self._ttft.requires

    def score(self, state: CycleState, endpoints: Sequence[EndpointState]) -> Scores:
        if not endpoints:
            return {}
        ttft = [self._ttft(state, e) for e in endpoints]
        best = min(ttft)
        return {e.endpoint.id: (best / t if t > 0 else 1.0) for e, t in zip(endpoints, ttft, strict=True)}
