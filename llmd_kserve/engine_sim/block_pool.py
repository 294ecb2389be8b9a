"""Paged KV-cache block pool: ref counts, prefix cache over full blocks, LRU eviction of free cached blocks, KV events.

Mirrors vLLM 0.26's ``vllm/v1/core/block_pool.py``: free blocks sit in one LRU queue (allocation pops the head);
freeing puts blocks that hold a cached hash at the tail, in the order given (callers free a request's blocks
tail-first), and blocks without a hash at the head, so they are reused before any cached block (``free_blocks``).
A free block that still holds a cached hash stays hittable until it is reallocated, at which point its hash is
evicted (``BlockRemoved``). Full blocks are registered under their chained hash (``BlockStored`` with the block's
tokens and parent hash); like vLLM's ``BlockHashToBlockMap`` identical blocks computed by two requests are both
registered, a lookup returns the earliest registered one, and evicting one copy leaves the other hittable. Events are
buffered and drained by the caller (:meth:`take_events`) when ``enable_events`` is set; otherwise none are built.
Not mirrored: vLLM reserves one of its ``num_gpu_blocks`` as the null block (one block of capacity).
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
        """hash -> block id of the earliest registered full block with that hash (free or in use)."""
        self._dups: dict[int, list[int]] = {}
        """hash -> later-registered copies, oldest first (vLLM does not de-duplicate cached blocks)."""
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
                self._uncache(h, b)
                if self.enable_events:
                    self._events.append(BlockRemoved(block_hashes=[h], medium=MEDIUM, group_idx=0))
            ref[b] = 1
            out.append(b)
        return out

    def _uncache(self, h: int, b: int) -> None:
        """Drop block ``b``'s registration under ``h`` (``BlockHashToBlockMap.pop``); another copy may remain."""
        dups = self._dups.get(h)
        if self.cached.get(h) == b:
            if dups:
                self.cached[h] = dups.pop(0)
                if not dups:
                    del self._dups[h]
            else:
                del self.cached[h]
        elif dups and b in dups:
            dups.remove(b)
            if not dups:
                del self._dups[h]

    def free(self, block_ids: Sequence[int]) -> None:
        """Drop one reference on each block, in the given order (vLLM ``BlockPool.free_blocks``): blocks reaching zero
        that hold a cached hash join the LRU tail in that order; those without a hash go to the head (evicted first)."""
        ref, free, bh = self.ref_cnt, self._free, self.block_hash
        unhashed: list[int] = []
        for b in block_ids:
            ref[b] -= 1
            if ref[b] == 0:
                if bh[b] is None:
                    unhashed.append(b)
                else:
                    free[b] = None
        for b in reversed(unhashed):  # prepend_n keeps their order: the first one given ends up at the head
            free[b] = None
            free.move_to_end(b, last=False)

    def cache_blocks(
        self, block_ids: Sequence[int], hashes: Sequence[int], parent: int | None, token_ids: Sequence[int]
    ) -> None:
        """Register newly full blocks under their hashes (``token_ids``: their tokens, ``parent``: the previous hash).

        As vLLM's ``BlockPool.cache_full_blocks``: a block whose hash is already cached under another block id is
        registered too (a second copy, not a replacement) and every block is announced in one ``BlockStored``."""
        cached, bh = self.cached, self.block_hash
        for b, h in zip(block_ids, hashes, strict=True):
            if bh[b] is not None:
                continue  # already registered (vLLM's _insert_block_hash returns early)
            bh[b] = h
            first = cached.setdefault(h, b)
            if first != b:
                self._dups.setdefault(h, []).append(b)
        if hashes and self.enable_events:
            self._events.append(self._stored(list(hashes), parent, list(token_ids)))

    def _stored(self, hashes: list[int], parent: int | None, token_ids: list[int]) -> BlockStored:
        return BlockStored(
            block_hashes=hashes, parent_block_hash=parent, token_ids=token_ids, block_size=self.block_size,
            lora_id=None, medium=MEDIUM, lora_name=None, extra_keys=[None] * len(hashes), group_idx=0,
            kv_cache_spec_kind="full_attention",
        )

    def reset(self) -> bool:
        """Drop every cached hash (``AllBlocksCleared``); refused (False) while any block is in use, as in vLLM."""
        if len(self._free) != self.num_blocks:
            return False
        self.cached.clear()
        self._dups.clear()
        self.block_hash = [None] * self.num_blocks
        if self.enable_events:
            self._events.append(AllBlocksCleared())
        return True

    def take_events(self) -> list[KVEvent]:
        """The events buffered since the last call."""
        ev, self._events = self._events, []
        return ev
