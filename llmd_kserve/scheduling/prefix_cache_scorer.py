"""Scorers ``prefix-cache-scorer`` / ``precise-prefix-cache-scorer``: the fraction of the prompt already cached."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Literal

from llmd_kserve.plugins.base import CycleState, PluginContext, PluginParams, Scores
from llmd_kserve.types import EndpointState


class PrefixCacheScorer:
    """Score = leading prompt blocks the endpoint holds / the prompt's full blocks, both in the endpoint's block
    size (0 for a prompt shorter than a block). ``mode: approx`` (llm-d's estimated prefix cache, the default of ``prefix-cache-scorer``) reads the
    router-side LRU; ``mode: precise`` reads the KV-event index (the default of ``precise-prefix-cache-scorer``)."""

    type: ClassVar[str] = "prefix-cache-scorer"
    kind: ClassVar[str] = "scorer"

    class Params(PluginParams):
        mode: Literal["precise", "approx"] = "approx"

    def __init__(self, name: str, params: Params, ctx: PluginContext) -> None:
        self.name = name
        self.mode = params.mode
        self.requires = ("tokenize-producer", f"{params.mode}-prefix-producer")

    def score(self, state: CycleState, endpoints: Sequence[EndpointState]) -> Scores:
        hits = state.prefix_hits.get(self.mode) or {}
        if not state.block_keys or not hits:
            return {e.endpoint.id: 0.0 for e in endpoints}
        if not state.keys_by_size:  # one block size for all
            n = len(state.block_keys)
            return {e.endpoint.id: min(1.0, hits.get(e.endpoint.id, 0) / n) for e in endpoints}
        out: Scores = {}
        for e in endpoints:  # hits count blocks of each endpoint's own size
            n = len(state.keys_for(e.endpoint.id))
            out[e.endpoint.id] = min(1.0, hits.get(e.endpoint.id, 0) / n) if n else 0.0
        return out


class PrecisePrefixCacheScorer(PrefixCacheScorer):
    """llm-d's ``precise-prefix-cache-scorer``: ``prefix-cache-scorer`` over the KV-event index."""

    type: ClassVar[str] = "precise-prefix-cache-scorer"

    class Params(PluginParams):
        mode: Literal["precise", "approx"] = "precise"
