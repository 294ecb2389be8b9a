"""Producer ``approx-prefix-cache-producer``: llm-d v1.0's router-side prefix estimate, matched in coarse blocks."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

from pydantic import Field

from llmd_kserve.kvcache.hashing import block_keys
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

MIN_BLOCK_TOKENS = 64
"""llm-d matches in blocks of at least this many tokens, whatever the engine's block size (its index memory)."""
MATCH_INFO = "prefix-match-info"
"""``state.data`` key: producer name (and type) -> :class:`PrefixMatchInfo`."""
_KEYS = "approx-prefix-cache-keys"


@dataclass(frozen=True, slots=True)
class PrefixMatchInfo:
    """llm-d's ``PrefixCacheMatchInfo`` for one request: leading blocks each endpoint holds (absent: 0), of
    ``total_blocks`` blocks of ``block_size`` tokens that were looked up."""

    hits: Mapping[EndpointId, int]
    total_blocks: int
    block_size: int

    def fraction(self, endpoint_id: EndpointId) -> float:
        """Matched / looked-up blocks (the affinity filter's and ``prefix-cache-scorer``'s score); 0 for none."""
        return self.hits.get(endpoint_id, 0) / self.total_blocks if self.total_blocks else 0.0

    def uncached_tokens(self, endpoint_id: EndpointId, prompt_tokens: int) -> int:
        """Prompt tokens the endpoint must compute: the unmatched looked-up blocks plus the tail past them."""
        indexed = self.total_blocks * self.block_size
        unmatched = indexed - self.hits.get(endpoint_id, 0) * self.block_size
        return max(0, unmatched) + max(0, prompt_tokens - indexed)


def match_info(state: CycleState, producer: str, block_size: int) -> PrefixMatchInfo:
    """The prefix match a plugin configured with ``prefixMatchInfoProducerName: producer`` reads: that
    ``approx-prefix-cache-producer`` (``""``: the first one configured); a name no such producer wrote is a
    ``precise-prefix-producer`` (the config check allows nothing else), whose KV-event index match is read."""
    info = (state.data.get(MATCH_INFO) or {}).get(producer or ApproxPrefixCacheProducer.type)
    if info is None:
        info = PrefixMatchInfo(state.prefix_hits.get("precise") or {}, len(state.block_keys), block_size)
    return info


class ApproxPrefixCacheProducer(OnScheduled, EndpointRemoved):
    """llm-d's approximate prefix cache: per endpoint, an LRU of the prompt blocks the router sent it, as large as
    its KV cache (``num_gpu_blocks`` with ``autoTune``, else ``lruCapacityPerServer``). A request's prompt is cut
    into blocks of the engine's block size (``autoTune``, from ``vllm:cache_config_info``; else
    ``blockSizeTokens``), never fewer than 64 tokens; at most ``maxPrefixTokensToMatch`` tokens (or, with that
    0, ``maxPrefixBlocksToMatch`` blocks; both 0: all) are looked up. As llm-d's, an endpoint's match counts
    every looked-up block it holds until a block nobody holds.

    Writes :class:`PrefixMatchInfo` under ``state.data["prefix-match-info"]`` (by its name and type) for
    ``prefix-cache-affinity-filter`` and ``inflight-load-producer``, and the match in engine blocks under
    ``state.prefix_hits["approx"]`` unless ``approx-prefix-producer`` already wrote it. Records the blocks on the
    chosen endpoint (and the P/D prefill endpoint) once the request is scheduled."""

    type: ClassVar[str] = "approx-prefix-cache-producer"
    kind: ClassVar[str] = "producer"

    class Params(PluginParams):
        auto_tune: bool = True
        """Block size and LRU capacity from each endpoint's metrics when it reports them."""
        block_size_tokens: int = Field(16, ge=1)
        """Block size without ``autoTune`` or metrics (raised to 64, as llm-d does)."""
        max_prefix_blocks_to_match: int = Field(2048, ge=0)
        """Cap on looked-up blocks when ``maxPrefixTokensToMatch`` is 0 (0: no cap)."""
        max_prefix_tokens_to_match: int = Field(131072, ge=0)
        """Cap on looked-up prompt tokens (0: use ``maxPrefixBlocksToMatch``)."""
        lru_capacity_per_server: int = Field(31250, ge=1)
        """Blocks remembered per endpoint without ``autoTune`` or ``num_gpu_blocks``."""
        block_size: int | None = Field(None, ge=1)
        """Deprecated name of ``blockSizeTokens`` (used when that is left at its default)."""

    requires: tuple[str, ...] = ("tokenize-producer",)

    def __init__(self, name: str, params: Params, ctx: PluginContext) -> None:
        self.name = name
        self.params = params
        block = params.block_size_tokens
        if params.block_size is not None and "block_size_tokens" not in params.model_fields_set:
            block = params.block_size
        self._block_tokens = block
        self._router_block = ctx.block_size
        self._seed = ctx.hash_seed
        self._lru = EndpointLRU()

    def block_size(self, candidates: Sequence[EndpointState]) -> int:
        """Tokens per matched block: the first candidate's engine block size (``autoTune``) or
        ``blockSizeTokens``, at least 64."""
        size = self._block_tokens
        if self.params.auto_tune and candidates and candidates[0].metrics.block_size:
            size = candidates[0].metrics.block_size
        return max(size, MIN_BLOCK_TOKENS)

    def max_blocks(self, block_size: int) -> int | None:
        """Blocks looked up per request (None: all)."""
        p = self.params
        if p.max_prefix_tokens_to_match > 0:
            return p.max_prefix_tokens_to_match // block_size
        return p.max_prefix_blocks_to_match or None

    def produce(self, state: CycleState) -> None:
        size = self.block_size(state.candidates)
        keys = self._keys(state, size)
        cap = self.max_blocks(size)
        if cap is not None:
            keys = keys[:cap]
        hits = self._lru.held_until_gap(keys, {c.endpoint.id for c in state.candidates})
        info = PrefixMatchInfo(hits, len(keys), size)
        infos = state.data.setdefault(MATCH_INFO, {})
        infos.setdefault(self.type, info)
        infos[self.name] = info
        state.data.setdefault(_KEYS, {})[self.name] = keys
        if hits and "approx" not in state.prefix_hits:
            engine = {e: n * size // self._router_block for e, n in hits.items()}
            state.prefix_hits["approx"] = {e: n for e, n in engine.items() if n > 0}

    def _keys(self, state: CycleState, size: int) -> Sequence[BlockKey]:
        """The prompt's chained keys per ``size``-token block: every n-th router key when ``size`` is a multiple of
        the router's block size (a chained key names its whole prefix), else hashed from the token ids."""
        step, rest = divmod(size, self._router_block)
        if rest == 0:
            return state.block_keys[step - 1::step]
        return block_keys(state.token_ids, size, self._seed)

    def on_scheduled(self, state: CycleState, decision: HandlerDecision) -> None:
        keys = (state.data.get(_KEYS) or {}).get(self.name)
        if not keys:
            return
        for endpoint_id in (decision.target, decision.prefill):
            if endpoint_id is not None:
                self._lru.record(endpoint_id, keys, self._capacity(state, endpoint_id))

    def _capacity(self, state: CycleState, endpoint_id: EndpointId) -> int:
        if self.params.auto_tune:
            for c in state.candidates:
                if c.endpoint.id == endpoint_id and c.metrics.num_gpu_blocks:
                    return c.metrics.num_gpu_blocks
        return self.params.lru_capacity_per_server

    def remove_endpoint(self, endpoint_id: EndpointId) -> None:
        self._lru.remove(endpoint_id)
