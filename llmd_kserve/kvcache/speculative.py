"""Speculative prefix entries: blocks an endpoint *will* hold because the router just sent it the prompt.

A precise index only learns of a prefix when the engine's KV events arrive, after the prefill. Requests on a new
prefix that arrive before then (a burst) would look cold everywhere and be spread over the pool, each prefilling
the same prefix again — the "burst affinity" problem. Recording the routed prompt's block keys for its endpoint,
for ``ttl_s`` seconds (until the real events have had time to arrive), lets the next request of the burst follow it.
Entries live between ``ttl_s`` and ``2 * ttl_s``: two generations rotated by the injected clock, so expiry is O(1).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from llmd_kserve.types import BlockKey, EndpointId


class SpeculativeBlocks:
    """Per endpoint, the block keys of prompts routed to it in the last ``ttl_s`` to ``2 * ttl_s`` seconds."""

    def __init__(self, ttl_s: float, clock: Callable[[], float], max_keys_per_endpoint: int = 1_000_000) -> None:
        self.ttl_s = ttl_s
        self._clock = clock
        self._max = max_keys_per_endpoint
        self._cur: dict[EndpointId, set[BlockKey]] = {}
        self._old: dict[EndpointId, set[BlockKey]] = {}
        self._epoch = self._epoch_now()

    def _epoch_now(self) -> int:
        return int(self._clock() // self.ttl_s)

    def _rotate(self) -> None:
        epoch = self._epoch_now()
        if epoch != self._epoch:  # generations are clock epochs of ttl_s: entries of epoch k expire when k+2 starts
            self._old = self._cur if epoch == self._epoch + 1 else {}
            self._cur = {}
            self._epoch = epoch

    def record(self, endpoint: EndpointId, keys: Sequence[BlockKey]) -> None:
        self._rotate()
        cur = self._cur.get(endpoint)
        if cur is None:
            cur = self._cur[endpoint] = set()
        elif len(cur) + len(keys) > self._max:
            cur.clear()
        elif keys and keys[0] in cur:  # a prompt is recorded with all its keys, so what this one shares with
            held = _leading(keys, cur.__contains__)  # recorded prompts is a prefix of its keys: add the rest
            cur.update(keys[held:] if held < len(keys) else ())
            return
        cur.update(keys)

    def match(self, keys: Sequence[BlockKey], endpoints: Iterable[EndpointId]) -> dict[EndpointId, int]:
        """Leading blocks of ``keys`` recorded for each endpoint (endpoints with none are left out)."""
        self._rotate()
        out: dict[EndpointId, int] = {}
        if not keys:
            return out
        first = keys[0]
        for ep in endpoints:
            cur, old = self._cur.get(ep), self._old.get(ep)
            if not ((cur is not None and first in cur) or (old is not None and first in old)):
                continue  # (most endpoints, for a prompt routed elsewhere lately: no closure made)

            def held(i: int, cur: set[BlockKey] | None = cur, old: set[BlockKey] | None = old) -> bool:
                k = keys[i]
                return (cur is not None and k in cur) or (old is not None and k in old)

            out[ep] = _leading(keys, held, by_index=True)
        return out

    def remove_endpoint(self, endpoint: EndpointId) -> None:
        self._cur.pop(endpoint, None)
        self._old.pop(endpoint, None)


def _leading(keys: Sequence[BlockKey], held: Callable[[Any], bool], by_index: bool = False) -> int:
    """How many leading ``keys`` are ``held`` (``held(key)``, or ``held(i)`` with ``by_index``), given that the
    first one is. Keys are chained (a key names its whole prefix) and a prompt is recorded with all its keys, so
    "key i is recorded" is monotone in i: a binary search for the last one, O(log n) lookups."""
    lo, hi = 0, len(keys) - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if held(mid if by_index else keys[mid]):
            lo = mid
        else:
            hi = mid - 1
    return lo + 1
