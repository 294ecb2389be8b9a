"""Scorer ``token-load-scorer``: fewer tokens in flight on an endpoint (with this request's own) is better."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Literal

from pydantic import Field

from llmd_kserve.plugins.base import CycleState, PluginContext, PluginParams, Scores
from llmd_kserve.scheduling.inflight_load import inflight_scores
from llmd_kserve.scheduling.inflight_tokens import inflight_tokens
from llmd_kserve.types import EndpointState

DEFAULT_QUEUE_THRESHOLD_TOKENS = 4_194_304
"""llm-d's default: 128 requests of 32K tokens."""


class TokenLoadScorer:
    """llm-d v1.0's scorer: ``1 - min(1, (in-flight tokens + this request's tokens) / queueThresholdTokens)``,
    where the in-flight tokens are llm-d's view of ``inflight-load-producer`` (uncached prompt tokens not yet
    prefilled, plus estimated output tokens if that producer adds them) and this request's tokens are its uncached
    prompt tokens on that endpoint (plus its output estimate). Unlike ``active-request-scorer`` it tells one
    8k-token prompt from one 20-token prompt.

    ``normalize: candidates`` gives this router's earlier formula instead: ``(max - tokens) / max`` over the
    candidates, with the uncached prompt tokens of every request in flight until it finishes (1.0 for all when
    idle)."""

    type: ClassVar[str] = "token-load-scorer"
    kind: ClassVar[str] = "scorer"

    class Params(PluginParams):
        queue_threshold_tokens: int = Field(DEFAULT_QUEUE_THRESHOLD_TOKENS, ge=0)
        """Tokens at which an endpoint scores 0 (0: the default, as in llm-d)."""
        in_flight_load_producer_name: str = ""
        """The ``inflight-load-producer`` to read (empty: the one configured or added)."""
        normalize: Literal["threshold", "candidates"] = "threshold"
        """``threshold``: llm-d's absolute scale; ``candidates``: relative to the busiest candidate."""
        producer_refs: ClassVar[dict[str, tuple[str, ...]]] = {
            "in_flight_load_producer_name": ("inflight-load-producer",)}

    requires: tuple[str, ...] = ("inflight-load-producer",)
    reads_token_view: ClassVar[bool] = True
    """Reads ``inflight-load-producer``'s token view (kept only when a plugin does)."""

    def __init__(self, name: str, params: Params, ctx: PluginContext) -> None:
        self.name = name
        self.params = params
        self._threshold = params.queue_threshold_tokens or DEFAULT_QUEUE_THRESHOLD_TOKENS

    def score(self, state: CycleState, endpoints: Sequence[EndpointState]) -> Scores:
        if self.params.normalize == "candidates":
            return inflight_scores(state, endpoints, "tokens")
        view = inflight_tokens(state, self.params.in_flight_load_producer_name)
        if view is None:
            return {e.endpoint.id: 1.0 for e in endpoints}
        out: Scores = {}
        for e in endpoints:
            eid = e.endpoint.id
            tokens = view.tokens.get(eid, 0) + view.request(eid)
            out[eid] = 1.0 if tokens <= 0 else 1.0 - min(tokens, self._threshold) / self._threshold
        return out
