"""EndpointLRU: recording, eviction, removal and its two match counts."""

from __future__ import annotations

from llmd_kserve.scheduling.endpoint_lru import EndpointLRU
from llmd_kserve.types import BlockKey, EndpointId

A, B, C = EndpointId("a"), EndpointId("b"), EndpointId("c")


def keys(*ks: int) -> list[BlockKey]:
    return [BlockKey(k) for k in ks]


def test_leading_counts_unbroken_prefixes_and_held_until_gap_counts_llm_d_style():
    lru = EndpointLRU()
    lru.record(A, keys(1, 2, 3, 4), capacity=10)
    lru.record(B, keys(1, 3, 4), capacity=10)
    assert lru.leading(keys(1, 2, 3, 4, 5), [A, B, C]) == {A: 4, B: 1}
    assert lru.held_until_gap(keys(1, 2, 3, 4, 5), {A, B, C}) == {A: 4, B: 3}  # B's gap at 2: A holds it
    assert lru.held_until_gap(keys(9, 1), {A, B}) == {} and lru.leading(keys(9, 1), [A, B]) == {}


def test_capacity_evicts_the_least_recently_used_and_remove_forgets():
    lru = EndpointLRU()
    lru.record(A, keys(1, 2, 3), capacity=3)
    lru.record(A, keys(1), capacity=3)  # 1 is now the most recent: 2 goes first
    lru.record(A, keys(7), capacity=3)
    assert lru.leading(keys(1, 2), [A]) == {A: 1} and lru.leading(keys(3), [A]) == {A: 1}
    lru.record(B, keys(1, 3), capacity=3)
    lru.remove(A)
    assert lru.leading(keys(1, 3), [A, B]) == {B: 2} and lru.leading(keys(7), [A]) == {}
