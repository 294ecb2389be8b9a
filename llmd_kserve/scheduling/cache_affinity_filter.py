"""Filter ``prefix-cache-affinity-filter``: llm-d v1.0's "sticky until saturated" gate, with its parameters."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Literal

from pydantic import Field, model_validator

from llmd_kserve.plugins.base import CycleState, PluginContext, PluginParams
from llmd_kserve.scheduling.approx_cache_producer import match_info
from llmd_kserve.scheduling.inflight_tokens import inflight_tokens
from llmd_kserve.scheduling.ttft import estimate_ttft
from llmd_kserve.types import EndpointState

DEFAULT_PEAK_PREFILL_THROUGHPUT = 15928.0
"""llm-d's default (tokens/s): Qwen3-32B on two H100 80GB (TP=2), vLLM, one 8192-token chunk. Calibrate your own
with ``llmd-kserve calibrate``."""


class PrefixCacheAffinityFilter:
    """Keeps the *sticky* endpoints, those holding at least ``affinityThreshold`` of the prompt's looked-up blocks
    (the prefix producer's match), unless the fastest sticky one's estimated TTFT is more than
    ``maxTTFTPenaltyMs`` above the fastest other one's (0: always stick); then, or when none is sticky, or with
    probability ``explorationProbability``, every candidate is kept.

    TTFT (``ttftSource``): ``prefillThroughput`` estimates it as the endpoint's in-flight tokens (llm-d's view of
    ``inflight-load-producer``: prompt tokens not yet prefilled) / ``peakPrefillThroughput``; ``latencyPredictor``
    uses this router's latency-profile prediction (the ``predicted-ttft-scorer``'s model) in place of llm-d's
    trained predictor. This is llm-d's filter; ``prefix-affinity-filter`` is this router's own variant."""

    type: ClassVar[str] = "prefix-cache-affinity-filter"
    kind: ClassVar[str] = "filter"

    class Params(PluginParams):
        affinity_threshold: float = Field(0.80, ge=0.0, le=1.0)
        """Matched fraction of the prompt an endpoint needs to be sticky (0: the filter keeps everything)."""
        exploration_probability: float = Field(0.0, ge=0.0, le=1.0)
        """Probability of skipping the gate for one request (seeds caches elsewhere)."""
        max_ttft_penalty_ms: float = Field(18000.0, ge=0.0, alias="maxTTFTPenaltyMs")
        """Break stickiness when the best sticky TTFT exceeds the best other one's by more than this (0: never)."""
        ttft_source: Literal["prefillThroughput", "latencyPredictor"] = "prefillThroughput"
        peak_prefill_throughput: float = Field(DEFAULT_PEAK_PREFILL_THROUGHPUT, ge=0.0)
        """Tokens per second one endpoint prefills at best (``llmd-kserve calibrate`` measures it)."""
        prefix_match_info_producer_name: str = ""
        """The prefix producer to read (an ``approx-prefix-cache-producer`` or ``precise-prefix-producer`` in
        plugins[]; empty: the ``approx-prefix-cache-producer``)."""
        latency_prediction_info_producer_name: str = ""
        """llm-d's latency-predictor producer; none exists here (``latencyPredictor`` uses the latency profile)."""
        in_flight_load_producer_name: str = ""
        """The ``inflight-load-producer`` to read (empty: the one configured or added)."""
        producer_refs: ClassVar[dict[str, tuple[str, ...]]] = {
            "prefix_match_info_producer_name": ("approx-prefix-cache-producer", "precise-prefix-producer"),
            "latency_prediction_info_producer_name": ("predicted-latency-producer",),
            "in_flight_load_producer_name": ("inflight-load-producer",)}

        @model_validator(mode="after")
        def _throughput_for_the_gate(self) -> PrefixCacheAffinityFilter.Params:
            if (self.ttft_source == "prefillThroughput" and self.max_ttft_penalty_ms > 0
                    and self.peak_prefill_throughput == 0):
                raise ValueError("peakPrefillThroughput must be > 0 when ttftSource is prefillThroughput")
            return self

    reads_token_view: ClassVar[bool] = True
    """Reads ``inflight-load-producer``'s token view (kept only when a plugin does)."""

    def __init__(self, name: str, params: Params, ctx: PluginContext) -> None:
        self.name = name
        self.params = params
        needs = ["tokenize-producer", "inflight-load-producer"]
        if not params.prefix_match_info_producer_name:
            needs.append("approx-prefix-cache-producer")
        self.requires = tuple(needs)
        self._rng = ctx.rng
        self._profile = ctx.profile
        self._block_size = ctx.block_size

    def filter(self, state: CycleState, endpoints: Sequence[EndpointState]) -> Sequence[EndpointState]:
        p = self.params
        if len(endpoints) <= 1 or p.affinity_threshold <= 0:
            return endpoints
        if p.exploration_probability > 0 and self._rng.random() < p.exploration_probability:
            return endpoints
        info = match_info(state, p.prefix_match_info_producer_name, self._block_size)
        sticky = [e for e in endpoints if info.fraction(e.endpoint.id) >= p.affinity_threshold]
        if not sticky:
            return endpoints
        if p.max_ttft_penalty_ms > 0 and len(sticky) < len(endpoints):
            ids = {e.endpoint.id for e in sticky}
            best_sticky = min(self.ttft_ms(state, e) for e in sticky)
            best_other = min(self.ttft_ms(state, e) for e in endpoints if e.endpoint.id not in ids)
            if best_sticky - best_other > p.max_ttft_penalty_ms:
                return endpoints
        return sticky

    def ttft_ms(self, state: CycleState, endpoint: EndpointState) -> float:
        """The load gate's TTFT estimate for one endpoint, in milliseconds."""
        p = self.params
        if p.ttft_source == "latencyPredictor":
            return 1000.0 * estimate_ttft(state, endpoint, self._profile, self._block_size)
        view = inflight_tokens(state, p.in_flight_load_producer_name)
        tokens = view.tokens.get(endpoint.endpoint.id, 0) if view is not None else 0
        return tokens / p.peak_prefill_throughput * 1000.0
