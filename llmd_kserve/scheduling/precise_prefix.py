"""Producer ``precise-prefix-producer``: leading blocks of the prompt each endpoint holds, from the KV-event index."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from llmd_kserve.errors import ConfigError
from llmd_kserve.kvcache.speculative import SpeculativeBlocks
from llmd_kserve.plugins.base import (
    CycleState,
    EndpointRemoved,
    HandlerDecision,
    OnScheduled,
    PluginContext,
    PluginParams,
)
from llmd_kserve.scheduling.approx_prefix import ApproxPrefixProducer
from llmd_kserve.types import EndpointId, EndpointState


class PrecisePrefixProducer(OnScheduled, EndpointRemoved):
    """Looks the prompt's block keys up in the router's KV index (fed by the engines' KV events) and records,
    per candidate, how many leading blocks it holds, under ``state.prefix_hits["precise"]``.

    An endpoint whose KV events do not reach the index (``ctx.has_kv_events`` false: the router was given no
    ``#kv=`` stream for it, as with vLLM started without ``--kv-events-config``) would always match 0 blocks and
    make every prefix-aware plugin cache-blind for it. With ``fallbackToApprox`` (the default) such endpoints get
    the router-side estimate of ``approx-prefix-producer`` instead (an LRU of what the router sent them), so
    precise routing degrades per endpoint to approximate routing rather than to load balancing.

    Without an index (``ctx.index is None``) every endpoint matches 0 blocks. The index's key seed must equal
    ``ctx.hash_seed`` (checked). The index keys an endpoint's blocks in the block size of its KV events, so the
    prompt is matched in each endpoint's own size (``state.by_block_size``).
    """

    type: ClassVar[str] = "precise-prefix-producer"
    kind: ClassVar[str] = "producer"

    class Params(PluginParams):
        max_prefix_blocks_to_match: int = Field(0, ge=0)
        """Look at most this many leading blocks (0: all of them)."""
        fallback_to_approx: bool = True
        """Estimate router-side the prefix of endpoints without a KV-event stream (else they match 0 blocks)."""
        lru_capacity_per_server: int = Field(31250, ge=1)
        """The fallback's blocks per endpoint when its metrics don't report ``num_gpu_blocks``."""
        speculative_ttl_s: float = Field(2.0, ge=0.0)
        """Count a routed prompt's blocks as held by its endpoint for this long (to twice this), before its KV
        events arrive, so a burst on a new prefix follows the first request (``kvcache.speculative``; 0: off)."""

    requires: tuple[str, ...] = ("tokenize-producer",)

    def __init__(self, name: str, params: Params, ctx: PluginContext) -> None:
        self.name = name
        self._index = ctx.index
        index_seed = getattr(ctx.index, "seed", ctx.hash_seed)
        if index_seed != ctx.hash_seed:
            raise ConfigError(f"KV index keys use seed {index_seed} but the context hashes with {ctx.hash_seed}", "")
        self._max = params.max_prefix_blocks_to_match
        self._has_kv_events = ctx.has_kv_events
        self._speculative = (SpeculativeBlocks(params.speculative_ttl_s, ctx.clock)
                             if params.speculative_ttl_s > 0 else None)
        self._fallback: ApproxPrefixProducer | None = None
        if params.fallback_to_approx:
            self._fallback = ApproxPrefixProducer(f"{name}/fallback", ApproxPrefixProducer.Params(
                lru_capacity_per_server=params.lru_capacity_per_server,
                max_prefix_blocks_to_match=params.max_prefix_blocks_to_match), ctx)

    def produce(self, state: CycleState) -> None:
        if self._index is None or not state.block_keys:
            state.prefix_hits["precise"] = {}
            return
        streamed: list[EndpointId] = []
        blind: list[EndpointState] = []
        for c in state.candidates:
            if self._fallback is None or self._has_kv_events(c.endpoint):
                streamed.append(c.endpoint.id)
            else:
                blind.append(c)
        out: dict[EndpointId, int] = {}
        for keys, ids in state.by_block_size(streamed):  # each endpoint's blocks are keyed in its own block size
            if self._max and len(keys) > self._max:
                keys = keys[: self._max]
            out.update((ep, n) for ep, n in self._index.match(keys, ids).items() if n > 0)
            if self._speculative is not None:
                for ep, n in self._speculative.match(keys, ids).items():
                    if n > out.get(ep, 0):
                        out[ep] = n
        if blind and self._fallback is not None:
            self._fallback.update_capacity(blind)
            out.update(self._fallback.match_state(state, [c.endpoint.id for c in blind]))
        state.prefix_hits["precise"] = out

    def on_scheduled(self, state: CycleState, decision: HandlerDecision) -> None:
        if not state.block_keys:
            return
        if self._speculative is not None:
            for target in (decision.target, decision.prefill):
                if target is not None:
                    self._speculative.record(target, state.keys_for(target))
        if self._fallback is None:
            return
        blind = {c.endpoint.id for c in state.candidates if not self._has_kv_events(c.endpoint)}
        for target in (decision.target, decision.prefill):
            if target is not None and target in blind:
                self._fallback.record(target, state.keys_for(target))

    def remove_endpoint(self, endpoint_id: EndpointId) -> None:
        if self._speculative is not None:
            self._speculative.remove_endpoint(endpoint_id)
        if self._fallback is not None:
            self._fallback.remove_endpoint(endpoint_id)
