"""The precise KV-block index: which endpoint holds which router block key, fed by engine KV events.

Keys are the router's own (:func:`~llmd_kserve.kvcache.hashing.block_keys`), recomputed from each ``BlockStored``'s
``token_ids`` and chained from the router key of its parent block, so the engine's hash algorithm and seed do not
matter. Each endpoint keeps a map engine hash -> router key; that is how ``BlockRemoved`` (engine hashes only) and
the next ``BlockStored``'s ``parent_block_hash`` are resolved.

A ``BlockStored`` whose parent engine hash is unknown to this endpoint (events missed before we subscribed, or lost
in a sequence gap) cannot be keyed - its tokens are only a suffix of a prompt - so it is skipped and counted in
``stats().unknown_parents`` (llm-d's kv-cache manager does the same). Its children are then unknown too; they are
skipped and counted the same way until the engine stores the prefix again.

Layout (compact, fast): a dict router key -> bitmask of endpoints (one bit per endpoint, bits reused after removal)
in least-recently-stored order; per endpoint a dict engine hash -> router key. Memory is bounded by ``max_keys``:
past it, the least-recently-stored keys are evicted in batches (``evict_fraction`` of ``max_keys`` at a time, which
keeps eviction amortised O(1)); endpoint maps are swept of evicted keys in the same pass.

An engine may hold several copies of one block (vLLM does when requests compute the same prefix at the same time); it
publishes a ``BlockStored`` per copy and a ``BlockRemoved`` per evicted copy. The index counts copies per endpoint and
engine hash, so evicting one copy does not drop a block another copy still holds. (vLLM's opt-in
``kv_cache_report_mode: full`` also re-announces reused blocks; counted as copies, a block may then outlive its last
copy in the index: a misroute, never a failed request.)

If two engine hashes of one endpoint map to the same router key (same tokens, different LoRA or multimodal extra
keys, which router keys do not include), removing either clears the endpoint's bit for that key: a miss, never a
false hit for long.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from llmd_kserve.kvcache.events import AllBlocksCleared, BlockRemoved, BlockStored, EventBatch, KVEvent
from llmd_kserve.kvcache.hashing import ROOT_PARENT, block_keys
from llmd_kserve.types import BlockKey, EndpointId

log = logging.getLogger(__name__)

DEFAULT_MAX_KEYS = 4_000_000


@dataclass(frozen=True, slots=True)
class IndexStats:
    """Counters of one :class:`KVIndex` (a snapshot)."""

    keys: int
    """Distinct router block keys indexed."""
    entries: int
    """(endpoint, engine block) pairs indexed, i.e. the sum of every endpoint's map."""
    endpoints: int
    blocks_stored: int
    blocks_removed: int
    evictions: int
    """Router keys evicted because the index reached ``max_keys``."""
    unknown_parents: int
    """``BlockStored`` events skipped because their parent engine hash was unknown."""
    clears: int
    mismatched: int
    """``BlockStored`` events whose token count did not match ``len(block_hashes) * block_size`` (extra ignored)."""


class KVIndex:
    """Endpoint-by-block index with longest-prefix lookup. Synchronous, no I/O; not thread-safe."""

    def __init__(self, max_keys: int = DEFAULT_MAX_KEYS, *, seed: int = 0, evict_fraction: float = 1 / 16) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be >= 1")
        self.max_keys = max_keys
        self.seed = seed
        self._evict_batch = max(1, int(max_keys * evict_fraction))
        self._keys: dict[int, int] = {}  # router key -> endpoint bitmask, least recently stored first
        self._maps: dict[EndpointId, dict[int, int]] = {}  # endpoint -> engine hash -> router key
        self._extra: dict[EndpointId, dict[int, int]] = {}  # endpoint -> engine hash -> copies beyond the first
        self._block_size: dict[EndpointId, int] = {}  # endpoint -> block size its last BlockStored described
        self._bit: dict[EndpointId, int] = {}  # endpoint -> bit value (1 << i)
        self._by_bit: dict[int, EndpointId] = {}  # bit index -> endpoint
        self._free_bits: list[int] = []
        self._blocks_stored = self._blocks_removed = self._evictions = 0
        self._unknown_parents = self._clears = self._mismatched = 0

    # --- ingestion -------------------------------------------------------------------------------------------------

    def apply(self, endpoint_id: EndpointId, batch_or_events: EventBatch | Iterable[KVEvent]) -> int:
        """Apply one batch (or any iterable of events) published by ``endpoint_id``; returns blocks stored + removed."""
        events = batch_or_events.events if isinstance(batch_or_events, EventBatch) else batch_or_events
        emap = self._maps.get(endpoint_id)
        if emap is None:
            emap = self._add_endpoint(endpoint_id)
        bit = self._bit[endpoint_id]
        extra = self._extra[endpoint_id]
        n = 0
        for ev in events:
            if type(ev) is BlockStored:
                n += self._store(emap, extra, bit, ev)
                if ev.block_size > 0:
                    self._block_size[endpoint_id] = ev.block_size
            elif type(ev) is BlockRemoved:
                n += self._remove(emap, extra, bit, ev.block_hashes)
            elif type(ev) is AllBlocksCleared:
                self._clear(emap, bit)
                extra.clear()
                self._clears += 1
            else:
                raise TypeError(f"not a KV event: {type(ev).__name__}")
        if len(self._keys) > self.max_keys:
            self._evict()
        return n

    def _store(self, emap: dict[int, int], extra: dict[int, int], bit: int, ev: BlockStored) -> int:
        parent_hash = ev.parent_block_hash
        if parent_hash is None:
            parent = ROOT_PARENT
        else:
            found = emap.get(parent_hash)
            if found is None:
                self._unknown_parents += 1
                return 0
            parent = found
        hashes = ev.block_hashes
        keys = block_keys(ev.token_ids, ev.block_size, self.seed, parent)
        if len(keys) != len(hashes):
            self._mismatched += 1
        kmap = self._keys
        for h, k in zip(hashes, keys, strict=False):
            old = emap.get(h)
            if old == k:
                extra[h] = extra.get(h, 0) + 1  # another copy of a block this endpoint holds
            elif old is not None:
                self._clear_bit(old, bit)
                extra.pop(h, None)
            emap[h] = k
            kmap[k] = kmap.pop(k, 0) | bit  # re-insert: most recently stored last
        n = min(len(keys), len(hashes))
        self._blocks_stored += n
        return n

    def _remove(self, emap: dict[int, int], extra: dict[int, int], bit: int, hashes: Sequence[int]) -> int:
        n = 0
        for h in hashes:
            copies = extra.get(h)
            if copies:  # one copy of several evicted: the endpoint still holds the block
                if copies == 1:
                    del extra[h]
                else:
                    extra[h] = copies - 1
                n += 1
                continue
            k = emap.pop(h, None)
            if k is not None:
                self._clear_bit(k, bit)
                n += 1
        self._blocks_removed += n
        return n

    def _clear_bit(self, key: int, bit: int) -> None:
        mask = self._keys.get(key)
        if mask is not None and mask & bit:
            mask &= ~bit
            if mask:
                self._keys[key] = mask
            else:
                del self._keys[key]

    def _clear(self, emap: dict[int, int], bit: int) -> None:
        for k in emap.values():
            self._clear_bit(k, bit)
        emap.clear()

    def _evict(self) -> None:
        """Drop the least-recently-stored keys down to ``max_keys - evict_batch``, then sweep endpoint maps."""
        n = len(self._keys) - self.max_keys + self._evict_batch
        n = min(n, len(self._keys))
        victims = list(itertools.islice(self._keys, n))
        touched = 0
        for k in victims:
            touched |= self._keys.pop(k)
        self._evictions += len(victims)
        gone = set(victims)
        for eid, bit in self._bit.items():
            if touched & bit:
                emap = self._maps[eid]
                self._maps[eid] = {h: k for h, k in emap.items() if k not in gone}
                kept = self._maps[eid]
                extra = self._extra[eid]
                for h in [h for h in extra if h not in kept]:
                    del extra[h]
        log.debug("evicted %d keys (max_keys=%d)", len(victims), self.max_keys)

    # --- endpoints -------------------------------------------------------------------------------------------------

    def _add_endpoint(self, endpoint_id: EndpointId) -> dict[int, int]:
        i = self._free_bits.pop() if self._free_bits else len(self._bit)
        self._bit[endpoint_id] = 1 << i
        self._by_bit[i] = endpoint_id
        emap: dict[int, int] = {}
        self._maps[endpoint_id] = emap
        self._extra[endpoint_id] = {}
        return emap

    def remove_endpoint(self, endpoint_id: EndpointId) -> bool:
        """Forget everything ``endpoint_id`` holds; False if it was unknown."""
        emap = self._maps.pop(endpoint_id, None)
        self._block_size.pop(endpoint_id, None)
        self._extra.pop(endpoint_id, None)
        if emap is None:
            return False
        bit = self._bit.pop(endpoint_id)
        self._clear(emap, bit)
        i = bit.bit_length() - 1
        del self._by_bit[i]
        self._free_bits.append(i)
        return True

    def clear_endpoint(self, endpoint_id: EndpointId) -> None:
        """As if ``endpoint_id`` published ``AllBlocksCleared`` (e.g. its publisher restarted)."""
        if endpoint_id in self._maps:
            self._clear(self._maps[endpoint_id], self._bit[endpoint_id])
            self._extra[endpoint_id].clear()

    @property
    def endpoints(self) -> list[EndpointId]:
        return list(self._maps)

    def block_size(self, endpoint_id: EndpointId) -> int | None:
        """The block size ``endpoint_id``'s ``BlockStored`` events describe (None: none seen yet). Its blocks are keyed
        in that size, so a prompt matches them only when keyed in it too."""
        return self._block_size.get(endpoint_id)

    # --- lookup ----------------------------------------------------------------------------------------------------

    def match(self, keys: Sequence[BlockKey], endpoints: Iterable[EndpointId] | None = None) -> dict[EndpointId, int]:
        """Number of LEADING ``keys`` each endpoint holds (0 included) - for ``endpoints``, or every known one."""
        if endpoints is None:
            result = dict.fromkeys(self._maps, 0)
            alive = 0
            for b in self._bit.values():
                alive |= b
        else:
            result = {}
            alive = 0
            for eid in endpoints:
                result[eid] = 0
                alive |= self._bit.get(eid, 0)
        if not alive:
            return result
        get = self._keys.get
        by_bit = self._by_bit
        for i, k in enumerate(keys):
            m = get(k, 0) & alive
            if m != alive:
                if i == 0:  # those dropped at the first key hold 0 blocks: already so in result
                    alive = m
                    if not alive:
                        return result
                    continue
                dropped = alive & ~m
                while dropped:
                    low = dropped & -dropped
                    result[by_bit[low.bit_length() - 1]] = i
                    dropped ^= low
                alive = m
                if not alive:
                    return result
        n = len(keys)  # whoever is still alive holds every key
        while alive:
            low = alive & -alive
            result[by_bit[low.bit_length() - 1]] = n
            alive ^= low
        return result

    def holders(self, key: BlockKey) -> list[EndpointId]:
        """Endpoints holding one block key."""
        mask = self._keys.get(key, 0)
        return [eid for eid, bit in self._bit.items() if mask & bit]

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    def stats(self) -> IndexStats:
        return IndexStats(
            keys=len(self._keys),
            entries=sum(map(len, self._maps.values())),
            endpoints=len(self._maps),
            blocks_stored=self._blocks_stored,
            blocks_removed=self._blocks_removed,
            evictions=self._evictions,
            unknown_parents=self._unknown_parents,
            clears=self._clears,
            mismatched=self._mismatched,
        )
