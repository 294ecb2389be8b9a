"""Scorer ``kv-cache-utilization-scorer``: more free KV cache (``vllm:kv_cache_usage_perc``) is better."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from llmd_kserve.plugins.base import CycleState, PluginContext, PluginParams, Scores
from llmd_kserve.types import NO_LOAD, EndpointState


class KVCacheUtilizationScorer:
    """Score = 1 - KV-cache usage (clamped to [0, 1]).

    With ``countUnscraped`` (default) the usage is projected: the uncached prompt tokens this router sent the
    endpoint since its last scrape (``state.unscraped``) are added as blocks of the endpoint's
    ``vllm:cache_config_info`` size (nothing is added while that is unknown), so that the endpoint with the lowest
    scraped usage stops looking emptiest after it has been sent a burst."""

    type: ClassVar[str] = "kv-cache-utilization-scorer"
    kind: ClassVar[str] = "scorer"

    class Params(PluginParams):
        count_unscraped: bool = True
        """Add the router's own prompt tokens sent since each endpoint's last scrape to its scraped usage."""

    def __init__(self, name: str, params: Params, ctx: PluginContext) -> None:
        self.name = name
        self._unscraped = params.count_unscraped
        self._block_size = ctx.block_size
        self.requires: tuple[str, ...] = ("inflight-load-producer",) if params.count_unscraped else ()

    def score(self, state: CycleState, endpoints: Sequence[EndpointState]) -> Scores:
        extra = (state.unscraped or {}) if self._unscraped else {}
        get = extra.get if extra else None  # (one emptiness check, not one per endpoint)
        out: Scores = {}
        for e in endpoints:
            usage = e.metrics.kv_usage
            tokens = get(e.endpoint.id, NO_LOAD).tokens if get is not None else 0
            if tokens and e.metrics.num_gpu_blocks:
                bs = e.metrics.block_size or self._block_size
                usage += -(-tokens // bs) / e.metrics.num_gpu_blocks
            out[e.endpoint.id] = 1.0 - min(1.0, max(0.0, usage))
        return out
