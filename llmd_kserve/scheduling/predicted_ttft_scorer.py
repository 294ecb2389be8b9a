"""Scorer ``predicted-ttft-scorer``: shorter predicted time to first token (engine latency model) is better."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Literal

from pydantic import Field

from llmd_kserve.plugins.base import CycleState, PluginContext, PluginParams, Scores
from llmd_kserve.scheduling.ttft import estimate_ttft
from llmd_kserve.types import EndpointState


class PredictedTTFTScorer:
    """Predicts each candidate's TTFT with :func:`~llmd_kserve.scheduling.ttft.estimate_ttft` (backlog of queued
    prompt tokens + this request's uncached tokens, timed by ``ctx.profile``) and scores ``best / predicted``:
    1.0 for the fastest endpoint, 0.5 for one twice as slow. A ratio, not min-max, so that a 1 ms difference
    between two nearly idle endpoints doesn't swing the score across its whole range."""

    type: ClassVar[str] = "predicted-ttft-scorer"
    kind: ClassVar[str] = "scorer"

    class Params(PluginParams):
        mode: Literal["precise", "approx"] = "precise"
        """Which prefix match tells the cached tokens."""
        tokens_per_waiting_request: int = Field(512, ge=0)
        backlog: Literal["inflight", "queue"] = "inflight"
        """The router's view of each endpoint's prefill backlog (``ttft.estimate_ttft``): every in-flight request's
        uncached tokens, or the prefill seconds not yet worked off (requests past their prefill leave it)."""
        """Prompt tokens assumed per waiting request reported by the metrics."""

    def __init__(self, name: str, params: Params, ctx: PluginContext) -> None:
        self.name = name
        self.params = params
        self.requires = ("tokenize-producer", f"{params.mode}-prefix-producer", "inflight-load-producer")
        self._profile = ctx.profile
        self._block_size = ctx.block_size

    def score(self, state: CycleState, endpoints: Sequence[EndpointState]) -> Scores:
        if not endpoints:
            return {}
        args = (self._profile, self._block_size, self.params.mode, self.params.tokens_per_waiting_request,
                self.params.backlog)
        ttft = [estimate_ttft(state, e, *args) for e in endpoints]
        best = min(ttft)
        return {e.endpoint.id: (best / t if t > 0 else 1.0) for e, t in zip(endpoints, ttft, strict=True)}
