"""SpeculativeBlocks: routed prompts count as held until their KV events could have arrived, then expire."""

from __future__ import annotations

from llmd_kserve.kvcache.hashing import block_keys
from llmd_kserve.kvcache.speculative import SpeculativeBlocks
from llmd_kserve.types import EndpointId

A, B = EndpointId("a"), EndpointId("b")


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_leading_blocks_per_endpoint_and_expiry() -> None:
    clock = FakeClock()
    spec = SpeculativeBlocks(2.0, clock)
    keys = block_keys(list(range(64)), 16)  # 4 blocks
    other = block_keys(list(range(32)) + [999] * 32, 16)  # shares the first 2 blocks
    spec.record(A, keys)
    assert spec.match(keys, [A, B]) == {A: 4}
    assert spec.match(other, [A, B]) == {A: 2}
    clock.t = 3.0  # next epoch: still there (entries live ttl..2 ttl)
    assert spec.match(keys, [A]) == {A: 4}
    clock.t = 4.5  # two epochs later: gone
    assert spec.match(keys, [A]) == {}


def test_long_idle_gap_drops_everything_and_remove_endpoint() -> None:
    clock = FakeClock()
    spec = SpeculativeBlocks(1.0, clock)
    keys = block_keys(list(range(32)), 16)
    spec.record(A, keys)
    spec.record(B, keys)
    spec.remove_endpoint(B)
    assert spec.match(keys, [A, B]) == {A: 2}
    clock.t = 10.0
    assert spec.match(keys, [A, B]) == {}
    assert spec.match([], [A]) == {}


def test_bounded_per_endpoint() -> None:
    spec = SpeculativeBlocks(1.0, FakeClock(), max_keys_per_endpoint=4)
    first, second = block_keys(list(range(64)), 16), block_keys(list(range(100, 164)), 16)
    spec.record(A, first)
    spec.record(A, second)  # would exceed 4: the endpoint's generation is cleared first
    assert spec.match(first, [A]) == {} and spec.match(second, [A]) == {A: 4}
