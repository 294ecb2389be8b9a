"""Paged KV-cache block pool: ref counts, prefix cache over full blocks, LRU eviction of free cached blocks, KV events.

Mirrors vLLM v1's ``BlockPool``: free blocks sit in one LRU queue (allocation pops the head, freeing appends to the
tail, so callers free a request's blocks tail-first); a free block that still holds a cached hash stays hittable
until it is reallocated, at which point its hash is evicted (``BlockRemoved``). Full blocks are registered under
their chained hash when computed (``BlockStored`` with the block's tokens and parent hash). Events are buffered and
drained by the caller (:meth:`take_events`) when ``enable_events`` is set; otherwise none are built (fast path).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from llmd_kserve.kvcache.events import AllBlocksCleared, BlockRemoved, BlockStored, KVEvent

MEDIUM = "GPU"


class BlockPool:
    """``num_blocks`` KV blocks of ``block_size`` tokens; synchronous, no I/O."""

    def __init__(self, num_blocks: int, block_size: int, enable_events: bool = False) -> None:
        if num_blocks <= 0 or block_size <= 0:
            raise ValueError("num_blocks and block_size must be positive")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.enable_events = enable_events
        self.ref_cnt = [0] * num_blocks
        self.block_hash: list[int | None] = [None] * num_blocks
        self.cached: dict[int, int] = {}
        """hash -> block id of every registered full block (free or in use)."""
        self._free: OrderedDict[int, None] = OrderedDict.fromkeys(range(num_blocks))
        self._events: list[KVEvent] = []

    # --- queries ------------------------------------------------------------------------------------------------
    @property
    def num_free(self) -> int:
        """Blocks allocatable now (free, including free blocks that still hold a cached hash)."""
        return len(self._free)

    @property
    def usage(self) -> float:
        """Fraction of blocks in use (vLLM's ``kv_cache_usage_perc``; free cached blocks count as free)."""
        return 1.0 - len(self._free) / self.num_blocks

    def lookup(self, hashes: Sequence[int], max_blocks: int | None = None) -> list[int]:
        """Block ids of the longest cached prefix of ``hashes`` (at most ``max_blocks``); touches nothing."""
        cached = self.cached
        out: list[int] = []
        n = len(hashes) if max_blocks is None else min(len(hashes), max_blocks)
        for i in range(n):
            b = cached.get(hashes[i])
            if b is None:
                break
            out.append(b)
        return out

    def num_free_among(self, block_ids: Sequence[int]) -> int:
        """How many of ``block_ids`` are currently free (touching them takes them out of the free queue)."""
        ref = self.ref_cnt
        return sum(1 for b in block_ids if ref[b] == 0)

    # --- mutations ----------------------------------------------------------------------------------------------
    def touch(self, block_ids: Sequence[int]) -> None:
        """Take a reference on cached blocks (prefix hit), removing free ones from the eviction queue."""
        ref, free = self.ref_cnt, self._free
        for b in block_ids:
            if ref[b] == 0:
                del free[b]
            ref[b] += 1

    def allocate(self, n: int) -> list[int]:
        """``n`` fresh blocks from the LRU head, evicting their cached hashes; raises ValueError if too few are free."""
        if n > len(self._free):
            raise ValueError(f"cannot allocate {n} blocks, {len(self._free)} free")
        free, ref, bh = self._free, self.ref_cnt, self.block_hash
        out: list[int] = []
        for _ in range(n):
            b, _v = free.popitem(last=False)
            h = bh[b]
            if h is not None:
                bh[b] = None
                if self.cached.get(h) == b:
                    del self.cached[h]
                    if self.enable_events:
                        self._events.append(BlockRemoved(block_hashes=[h], medium=MEDIUM, group_idx=0))
            ref[b] = 1
            out.append(b)
        return out

    def free(self, block_ids: Sequence[int]) -> None:
        """Drop one reference on each block, in the given order; blocks reaching zero join the LRU tail."""
        ref, free = self.ref_cnt, self._free
        for b in block_ids:
            ref[b] -= 1
            if ref[b] == 0:
                free[b] = None

    def cache_blocks(
        self, block_ids: Sequence[int], hashes: Sequence[int], parent: int | None, token_ids: Sequence[int]
    ) -> None:
        """Register newly full blocks under their hashes (``token_ids``: their tokens, ``parent``: the previous hash)."""
        cached, bh = self.cached, self.block_hash
        stored: list[int] = []
        for b, h in zip(block_ids, hashes, strict=True):
            if h in cached or bh[b] is not None:
                continue  # an identical block is already cached (same prefix computed twice): keep the first
            cached[h] = b
            bh[b] = h
            stored.append(h)
        if stored and self.enable_events:
            if len(stored) != len(hashes):  # emit only the newly registered run, with its own parent and tokens
                self._emit_partial(block_ids, hashes, parent, token_ids, set(stored))
            else:
                self._events.append(self._stored(list(hashes), parent, list(token_ids)))

    def _stored(self, hashes: list[int], parent: int | None, token_ids: list[int]) -> BlockStored:
        return BlockStored(
            block_hashes=hashes, parent_block_hash=parent, token_ids=token_ids, block_size=self.block_size,
            lora_id=None, medium=MEDIUM, lora_name=None, extra_keys=[None] * len(hashes), group_idx=0,
            kv_cache_spec_kind="full_attention",
        )

    def _emit_partial(self, block_ids, hashes, parent, token_ids, stored: set[int]) -> None:  # noqa: ANN001
        bs = self.block_size
        prev = parent
        for i, h in enumerate(hashes):
            if h in stored:
                self._events.append(self._stored([h], prev, list(token_ids[i * bs : (i + 1) * bs])))
            prev = h

    def reset(self) -> bool:
        """Drop every cached hash (``AllBlocksCleared``); refused (False) while any block is in use, as in vLLM."""
        if len(self._free) != self.num_blocks:
            return False
        self.cached.clear()
        self.block_hash = [None] * self.num_blocks
        if self.enable_events:
            self._events.append(AllBlocksCleared())
        return True

    def take_events(self) -> list[KVEvent]:
        """The events buffered since the last call."""
        ev, self._events = self._events, []
        return ev
