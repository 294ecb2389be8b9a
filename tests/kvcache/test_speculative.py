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


def test_recording_a_shared_prefix_adds_only_the_new_keys_and_matches_the_same() -> None:
    """``record`` skips what a prompt shares with prompts already recorded there: the recorded set is the same as
    adding every key (checked against a plain set on random prompts sharing prefixes)."""
    import random

    rng = random.Random(4)
    spec = SpeculativeBlocks(10.0, FakeClock())
    plain: set[int] = set()
    bases = [[rng.randrange(1000) for _ in range(16 * 12)] for _ in range(3)]
    for _ in range(200):
        base = rng.choice(bases)
        tokens = base[: 16 * rng.randrange(0, 13)] + [rng.randrange(1000) for _ in range(16 * rng.randrange(0, 4))]
        keys = block_keys(tokens, 16)
        want = 0
        while want < len(keys) and keys[want] in plain:
            want += 1
        assert spec.match(keys, [A]).get(A, 0) == want
        spec.record(A, keys)
        plain.update(keys)
        assert spec._cur[A] == plain
