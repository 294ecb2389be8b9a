"""EndpointLRU: per endpoint, an LRU of the block keys the router sent it, and who holds each key."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from llmd_kserve.types import BlockKey, EndpointId


class EndpointLRU:
    """The router's own guess of each endpoint's cached blocks (the approximate prefix producers' memory): per
    endpoint, the keys of the prompts sent to it, most recently used last, at most ``capacity`` of them; and for
    each key the endpoints holding it, so that a lookup walks the prompt's keys once (O(matched depth)), not
    endpoints x blocks."""

    __slots__ = ("_holders", "_lru")

    def __init__(self) -> None:
        self._holders: dict[BlockKey, set[EndpointId]] = {}
        self._lru: dict[EndpointId, OrderedDict[BlockKey, None]] = {}

    def record(self, endpoint_id: EndpointId, keys: Sequence[BlockKey], capacity: int) -> None:
        """``endpoint_id`` now caches ``keys`` (most recently used); its oldest keys beyond ``capacity`` go."""
        lru = self._lru.get(endpoint_id)
        if lru is None:
            lru = self._lru[endpoint_id] = OrderedDict()
        holders_of = self._holders
        for key in keys:
            if key in lru:
                lru.move_to_end(key)
            else:
                lru[key] = None
                holders = holders_of.get(key)
                if holders is None:
                    holders_of[key] = {endpoint_id}
                else:
                    holders.add(endpoint_id)
        while len(lru) > capacity:
            old, _ = lru.popitem(last=False)
            self._forget(old, endpoint_id)

    def remove(self, endpoint_id: EndpointId) -> None:
        """Forget everything recorded for ``endpoint_id``."""
        for key in self._lru.pop(endpoint_id, None) or ():
            self._forget(key, endpoint_id)

    def leading(self, keys: Sequence[BlockKey], endpoints: Sequence[EndpointId]) -> dict[EndpointId, int]:
        """Leading keys of ``keys`` each of ``endpoints`` holds without a gap (endpoints with 0 omitted)."""
        hits: dict[EndpointId, int] = {}
        alive = set(endpoints)
        depth = 0
        holders_of = self._holders
        for key in keys:
            holders = holders_of.get(key)
            if not holders:
                break
            if not alive <= holders:
                dropped = alive - holders
                if depth:
                    for ep in dropped:
                        hits[ep] = depth
                alive -= dropped
                if not alive:
                    break
            depth += 1
        if depth:
            for ep in alive:
                hits[ep] = depth
        return hits

    def held_until_gap(self, keys: Sequence[BlockKey], candidates: set[EndpointId]) -> dict[EndpointId, int]:
        """llm-d's count: per candidate, how many of ``keys`` it holds, counted until a key no endpoint holds
        (candidates with 0 omitted)."""
        hits: dict[EndpointId, int] = {}
        for key in keys:
            holders = self._holders.get(key)
            if not holders:
                break
            for ep in holders & candidates:
                hits[ep] = hits.get(ep, 0) + 1
        return hits

    def _forget(self, key: BlockKey, endpoint_id: EndpointId) -> None:
        holders = self._holders.get(key)
        if holders is not None:
            holders.discard(endpoint_id)
            if not holders:
                del self._holders[key]
