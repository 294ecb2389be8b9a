"""Producer ``approx-prefix-producer``: the router's own guess of each endpoint's cached prefix (per-endpoint LRU)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from pydantic import Field

from llmd_kserve.plugins.base import (
    CycleState,
    EndpointRemoved,
    HandlerDecision,
    OnScheduled,
    PluginContext,
    PluginParams,
)
from llmd_kserve.scheduling.endpoint_lru import EndpointLRU
from llmd_kserve.types import BlockKey, EndpointId, EndpointState


class ApproxPrefixProducer(OnScheduled, EndpointRemoved):
    """Remembers, per endpoint, the block keys of the prompts the router sent it, in an LRU as large as the
    endpoint's KV cache (``num_gpu_blocks`` from ``vllm:cache_config_info``, else ``lruCapacityPerServer``),
    like llm-d's estimated prefix-cache scorer. Matches go to ``state.prefix_hits["approx"]``.

    Lookup (:class:`EndpointLRU`) costs O(matched depth), not O(endpoints x blocks). Blocks are recorded when a
    request is scheduled (on the prefill endpoint too), in the endpoint's own block size, so that the LRU counts
    its blocks as its KV cache does.
    """

    type: ClassVar[str] = "approx-prefix-producer"
    kind: ClassVar[str] = "producer"

    class Params(PluginParams):
        lru_capacity_per_server: int = Field(31250, ge=1)
        """Blocks remembered per endpoint when its metrics don't report ``num_gpu_blocks``."""
        max_prefix_blocks_to_match: int = Field(0, ge=0)
        """Look at most this many leading blocks (0: all of them)."""

    requires: tuple[str, ...] = ("tokenize-producer",)

    def __init__(self, name: str, params: Params, ctx: PluginContext) -> None:
        self.name = name
        self._default_capacity = params.lru_capacity_per_server
        self._max = params.max_prefix_blocks_to_match
        self._lru = EndpointLRU()
        self._capacity: dict[EndpointId, int] = {}

    def produce(self, state: CycleState) -> None:
        self.update_capacity(state.candidates)
        state.prefix_hits["approx"] = self.match_state(state, [c.endpoint.id for c in state.candidates])

    def match_state(self, state: CycleState, endpoints: Sequence[EndpointId]) -> dict[EndpointId, int]:
        """:meth:`match` of the prompt in each endpoint's block size (``maxPrefixBlocksToMatch`` applied)."""
        hits: dict[EndpointId, int] = {}
        for keys, ids in state.by_block_size(endpoints):
            if self._max and len(keys) > self._max:
                keys = keys[: self._max]
            hits.update(self._lru.leading(keys, ids))
        return hits

    def update_capacity(self, candidates: Sequence[EndpointState]) -> None:
        """Each endpoint's LRU holds as many blocks as its KV cache (``num_gpu_blocks``), else the default."""
        for c in candidates:
            blocks = c.metrics.num_gpu_blocks
            self._capacity[c.endpoint.id] = blocks if blocks else self._default_capacity

    def on_scheduled(self, state: CycleState, decision: HandlerDecision) -> None:
        self.record(decision.target, state.keys_for(decision.target))
        if decision.prefill is not None:
            self.record(decision.prefill, state.keys_for(decision.prefill))

    def record(self, endpoint_id: EndpointId, keys: Sequence[BlockKey]) -> None:
        """Note that ``endpoint_id`` now caches ``keys`` (most recently used), evicting its oldest blocks."""
        self._lru.record(endpoint_id, keys, self._capacity.get(endpoint_id, self._default_capacity))

    def remove_endpoint(self, endpoint_id: EndpointId) -> None:
        self._lru.remove(endpoint_id)
        self._capacity.pop(endpoint_id, None)
