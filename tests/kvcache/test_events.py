"""Decoding and encoding of vLLM KV-event payloads, on the golden vLLM 0.26 frames and older array layouts."""

from __future__ import annotations

import msgspec
import pytest

from llmd_kserve.kvcache.events import (
    AllBlocksCleared,
    BlockRemoved,
    BlockStored,
    EventBatch,
    KVEventDecodeError,
    decode_payload,
    encode_payload,
    fold_hash,
)

enc = msgspec.msgpack.encode


def test_golden_frames_decode(golden_frames):
    stored = removed = 0
    for topic, seq, payload in golden_frames:
        assert topic == b"kv@llama-8b-shape"
        assert len(seq) == 8
        batch = decode_payload(payload)
        assert batch.data_parallel_rank == 0
        assert batch.ts > 1.7e9
        for ev in batch.events:
            if isinstance(ev, BlockStored):
                stored += 1
                assert ev.block_size == 16
                assert len(ev.token_ids) == 16 * len(ev.block_hashes)
                assert all(0 <= h < 2**64 for h in ev.block_hashes)
                assert ev.medium == "GPU"
            else:
                assert isinstance(ev, BlockRemoved)
                removed += 1
    assert stored == 3923 and removed == 430


def test_golden_frames_round_trip_bytewise(golden_frames):
    for _, _, payload in golden_frames:
        assert encode_payload(decode_payload(payload)) == payload


def test_array_encoding_round_trip(golden_frames):
    for _, _, payload in golden_frames[:50]:
        batch = decode_payload(payload)
        arr = encode_payload(batch, fmt="array")
        assert arr != payload
        assert decode_payload(arr) == batch


def test_old_array_layouts_with_and_without_trailing_fields():
    toks = list(range(32))
    payload = enc(
        [
            1.5,
            [
                ["BlockStored", [1, 2], None, toks, 16, None],  # no medium (oldest)
                ["BlockStored", [3], 2, toks[:16], 16, None, "CPU"],  # with medium
                ["BlockStored", [4], 3, toks[:16], 16, None, "GPU", None, None, 0, "full_attention", 99, "x"],
                ["BlockRemoved", [1]],
                ["BlockRemoved", [2], "GPU"],
                ["AllBlocksCleared"],
            ],
        ]
    )
    b = decode_payload(payload)
    assert b.ts == 1.5 and b.data_parallel_rank is None
    s0, s1, s2, r0, r1, c = b.events
    assert s0 == BlockStored([1, 2], None, toks, 16, None)
    assert s1.parent_block_hash == 2 and s1.medium == "CPU"
    assert s2.kv_cache_spec_kind == "full_attention" and s2.group_idx == 0
    assert r0 == BlockRemoved([1]) and r1 == BlockRemoved([2], "GPU")
    assert c == AllBlocksCleared()


def test_bytes_hashes_are_folded_like_vllm():
    h = bytes(range(32))
    expected = int.from_bytes(h, "big") & (2**64 - 1)
    payload = enc(
        [
            2.0,
            [
                {"type": "BlockStored", "block_hashes": [h], "parent_block_hash": b"\x01", "token_ids": [0] * 16,
                 "block_size": 16},
                {"type": "BlockRemoved", "block_hashes": [h]},
            ],
            3,
        ]
    )
    b = decode_payload(payload)
    assert b.events[0].block_hashes == [expected] == [fold_hash(h)]
    assert b.events[0].parent_block_hash == 1
    assert b.events[1].block_hashes == [expected]
    assert b.data_parallel_rank == 3


def test_map_events_missing_optional_fields_and_unknown_keys():
    payload = enc([0.0, [{"type": "BlockStored", "block_hashes": [7], "parent_block_hash": None,
                          "token_ids": [1] * 16, "block_size": 16, "future_field": {"a": 1}}], 0])
    (ev,) = decode_payload(payload).events
    assert ev.block_hashes == [7] and ev.lora_id is None


def test_map_shaped_batch_and_unknown_event_types_are_skipped():
    payload = enc({"ts": 3.0, "events": [{"type": "SomethingNew", "x": 1}, ["AllBlocksCleared"]],
                   "data_parallel_rank": 1})
    assert decode_payload(payload) == EventBatch(3.0, [AllBlocksCleared()], 1)


@pytest.mark.parametrize(
    "payload",
    [b"", b"\xc1garbage", enc("hello"), enc([1.0]), enc(["x", [], 0]), enc([1.0, 5, 0]),
     enc([1.0, [["BlockStored", "notalist"]], 0]), enc([1.0, [42], 0]), enc([1.0, [{"type": "BlockStored"}], 0])],
)
def test_garbage_raises_decode_error(payload):
    with pytest.raises(KVEventDecodeError):
        decode_payload(payload)


def test_encode_map_layout_is_vllm_0_26():
    batch = EventBatch(1.0, [BlockStored([1], None, [5] * 16, 16), BlockRemoved([1]), AllBlocksCleared()], 0)
    raw = msgspec.msgpack.decode(encode_payload(batch))
    assert raw[0] == 1.0 and raw[2] == 0
    assert list(raw[1][0]) == ["type", "block_hashes", "parent_block_hash", "token_ids", "block_size", "lora_id",
                               "medium", "lora_name"]
    assert raw[1][1] == {"type": "BlockRemoved", "block_hashes": [1], "medium": "GPU"}
    assert raw[1][2] == {"type": "AllBlocksCleared"}
    with pytest.raises(ValueError):
        encode_payload(batch, fmt="json")  # type: ignore[arg-type]
