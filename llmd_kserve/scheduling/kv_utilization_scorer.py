"""Scorer ``kv-cache-utilization-scorer``: more free KV cache (``vllm:kv_cache_usage_perc``) is better."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from llmd_kserve.plugins.base import CycleState, PluginContext, PluginParams, Scores
from llmd_kserve.types import EndpointState


class KVCacheUtilizationScorer:
    """Score = 1 - KV-cache usage (usage clamped to [0, 1])."""

    type: ClassVar[str] = "kv-cache-utilization-scorer"
    kind: ClassVar[str] = "scorer"

    class Params(PluginParams):
        pass

    requires: tuple[str, ...] = ()

    def __init__(self, name: str, params: Params, ctx: PluginContext) -> None:
        self.name = name

    def score(self, state: CycleState, endpoints: Sequence[EndpointState]) -> Scores:
        return {e.endpoint.id: 1.0 - min(1.0, max(0.0, e.metrics.kv_usage)) for e in endpoints}
