"""Producer ``precise-prefix-producer``: leading blocks of the prompt each endpoint holds, from the KV-event index."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from llmd_kserve.errors import ConfigError
from llmd_kserve.plugins.base import CycleState, PluginContext, PluginParams


class PrecisePrefixProducer:
    """Looks the prompt's block keys up in the router's KV index (fed by the engines' KV events) and records,
    per candidate, how many leading blocks it holds, under ``state.prefix_hits["precise"]``.

    Without an index (``ctx.index is None``) every endpoint matches 0 blocks. The index's key seed must equal
    ``ctx.hash_seed`` (checked) and ``ctx.block_size`` the engines' block size.
    """

    type: ClassVar[str] = "precise-prefix-producer"
    kind: ClassVar[str] = "producer"

    class Params(PluginParams):
        max_prefix_blocks_to_match: int = Field(0, ge=0)
        """Look at most this many leading blocks (0: all of them)."""

    requires: tuple[str, ...] = ("tokenize-producer",)

    def __init__(self, name: str, params: Params, ctx: PluginContext) -> None:
        self.name = name
        self._index = ctx.index
        index_seed = getattr(ctx.index, "seed", ctx.hash_seed)
        if index_seed != ctx.hash_seed:
            raise ConfigError(f"KV index keys use seed {index_seed} but the context hashes with {ctx.hash_seed}", "")
        self._max = params.max_prefix_blocks_to_match

    def produce(self, state: CycleState) -> None:
        keys = state.block_keys
        if self._index is None or not keys:
            state.prefix_hits["precise"] = {}
            return
        if self._max and len(keys) > self._max:
            keys = keys[: self._max]
        hits = self._index.match(keys, [c.endpoint.id for c in state.candidates])
        state.prefix_hits["precise"] = {ep: n for ep, n in hits.items() if n > 0}
