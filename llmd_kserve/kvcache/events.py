"""vLLM KV-cache events: msgspec structs, a tolerant payload decoder and vLLM 0.26's exact encoder.

Wire format (ZMQ multipart ``[topic, seq (8-byte big-endian), payload]``): the payload is msgpack
``[ts, [event, ...], data_parallel_rank]``. vLLM 0.26 encodes each event as a map tagged by ``"type"``::

    {"type": "BlockStored", "block_hashes": [...], "parent_block_hash": h | nil, "token_ids": [...],
     "block_size": 16, "lora_id": nil, "medium": "GPU", "lora_name": nil, "extra_keys": [...],
     "group_idx": 0, "kv_cache_spec_kind": "full_attention"}
    {"type": "BlockRemoved", "block_hashes": [...], "medium": "GPU", "group_idx": 0}
    {"type": "AllBlocksCleared"}

Older versions encode events as arrays whose first element is the tag, with later fields optional:
``["BlockStored", block_hashes, parent_block_hash, token_ids, block_size, lora_id, medium, lora_name, ...]``,
``["BlockRemoved", block_hashes, medium, ...]``, ``["AllBlocksCleared"]``. Hashes are 64-bit ints, or bytes
(``sha256`` without ``VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES``), which :func:`fold_hash` folds to the low 64 bits of
their big-endian value, as vLLM's own int conversion does.

:func:`decode_payload` tries a typed msgspec decoder (fast path for vLLM 0.26) and falls back to a generic,
field-by-field decoder for every other shape; unknown event types are skipped, unknown map keys ignored.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Literal

import msgspec

from llmd_kserve.errors import LlmdError

log = logging.getLogger(__name__)

_MASK64 = (1 << 64) - 1
MEDIUM_GPU = "GPU"


class KVEventDecodeError(LlmdError, ValueError):
    """A KV-event payload is not msgpack, or not shaped like ``[ts, events, dp_rank]``."""


class BlockStored(msgspec.Struct, tag=True, omit_defaults=True, gc=False):
    """Blocks newly cached by the engine; ``token_ids`` hold ``len(block_hashes) * block_size`` tokens."""

    block_hashes: list[int]
    parent_block_hash: int | None
    token_ids: list[int]
    block_size: int
    lora_id: int | None = None
    medium: str | None = MEDIUM_GPU
    lora_name: str | None = None
    extra_keys: list[Any] | None = None
    group_idx: int | None = None
    kv_cache_spec_kind: str | None = None


class BlockRemoved(msgspec.Struct, tag=True, omit_defaults=True, gc=False):
    """Blocks evicted from the engine's cache."""

    block_hashes: list[int]
    medium: str | None = MEDIUM_GPU
    group_idx: int | None = None


class AllBlocksCleared(msgspec.Struct, tag=True, omit_defaults=True, gc=False):
    """The engine dropped its whole prefix cache (reset, sleep, restart)."""


KVEvent = BlockStored | BlockRemoved | AllBlocksCleared


class EventBatch(msgspec.Struct, array_like=True, omit_defaults=True, gc=False):
    """One published message: ``[ts, events, data_parallel_rank]``."""

    ts: float
    events: list[KVEvent]
    data_parallel_rank: int | None = None


# --- exact vLLM 0.26 wire layout (fields without defaults are always written, the rest only when set) --------------


class _WireStored(msgspec.Struct, tag="BlockStored", omit_defaults=True, gc=False):
    block_hashes: list[int]
    parent_block_hash: int | None
    token_ids: list[int]
    block_size: int
    lora_id: int | None
    medium: str | None
    lora_name: str | None
    extra_keys: list[Any] | None = None
    group_idx: int | None = None
    kv_cache_spec_kind: str | None = None


class _WireRemoved(msgspec.Struct, tag="BlockRemoved", omit_defaults=True, gc=False):
    block_hashes: list[int]
    medium: str | None
    group_idx: int | None = None


class _WireCleared(msgspec.Struct, tag="AllBlocksCleared", omit_defaults=True, gc=False):
    pass


class _ArrStored(msgspec.Struct, tag="BlockStored", array_like=True, omit_defaults=True, gc=False):
    block_hashes: list[int]
    parent_block_hash: int | None
    token_ids: list[int]
    block_size: int
    lora_id: int | None
    medium: str | None
    lora_name: str | None = None
    extra_keys: list[Any] | None = None
    group_idx: int | None = None
    kv_cache_spec_kind: str | None = None


class _ArrRemoved(msgspec.Struct, tag="BlockRemoved", array_like=True, omit_defaults=True, gc=False):
    block_hashes: list[int]
    medium: str | None
    group_idx: int | None = None


class _ArrCleared(msgspec.Struct, tag="AllBlocksCleared", array_like=True, omit_defaults=True, gc=False):
    pass


class _WireBatch(msgspec.Struct, array_like=True, omit_defaults=True, gc=False):
    ts: float
    events: list[Any]
    data_parallel_rank: int | None = None


_fast_decoder = msgspec.msgpack.Decoder(EventBatch)
_generic_decoder = msgspec.msgpack.Decoder()
_encoder = msgspec.msgpack.Encoder()


def fold_hash(h: int | bytes | bytearray) -> int:
    """An engine block hash as a non-negative 64-bit int (bytes: low 64 bits of the big-endian value)."""
    if isinstance(h, int):
        return h & _MASK64
    if isinstance(h, bytes | bytearray | memoryview):
        return int.from_bytes(h, "big") & _MASK64
    raise KVEventDecodeError(f"block hash must be int or bytes, not {type(h).__name__}")


def _opt_hash(h: Any) -> int | None:
    return None if h is None else fold_hash(h)


def _ints(v: Any, what: str) -> list[int]:
    if not isinstance(v, list | tuple):
        raise KVEventDecodeError(f"{what} must be an array")
    return list(v)


def _field(e: dict[str, Any] | list[Any], name: str, pos: int, default: Any = None) -> Any:
    if isinstance(e, dict):
        return e.get(name, default)
    return e[pos] if pos < len(e) else default


def _generic_event(e: Any) -> KVEvent | None:
    """One event from a map (tagged ``type``) or an array (tag first); None for unknown types."""
    if isinstance(e, dict):
        tag = e.get("type")
    elif isinstance(e, list | tuple) and e:
        tag, e = e[0], list(e)
    else:
        raise KVEventDecodeError(f"event must be a map or an array, not {type(e).__name__}")
    try:
        if tag == "BlockStored":
            hashes = [fold_hash(h) for h in _ints(_field(e, "block_hashes", 1), "block_hashes")]
            return BlockStored(
                block_hashes=hashes,
                parent_block_hash=_opt_hash(_field(e, "parent_block_hash", 2)),
                token_ids=_ints(_field(e, "token_ids", 3), "token_ids"),
                block_size=int(_field(e, "block_size", 4)),
                lora_id=_field(e, "lora_id", 5),
                medium=_field(e, "medium", 6, MEDIUM_GPU),
                lora_name=_field(e, "lora_name", 7),
                extra_keys=_field(e, "extra_keys", 8),
                group_idx=_field(e, "group_idx", 9),
                kv_cache_spec_kind=_field(e, "kv_cache_spec_kind", 10),
            )
        if tag == "BlockRemoved":
            hashes = [fold_hash(h) for h in _ints(_field(e, "block_hashes", 1), "block_hashes")]
            return BlockRemoved(hashes, _field(e, "medium", 2, MEDIUM_GPU), _field(e, "group_idx", 3))
        if tag == "AllBlocksCleared":
            return AllBlocksCleared()
    except (TypeError, ValueError, IndexError) as exc:
        if isinstance(exc, KVEventDecodeError):
            raise
        raise KVEventDecodeError(f"bad {tag} event: {exc}") from exc
    log.debug("skipping unknown KV event type %r", tag)
    return None


def _fold_negative(batch: EventBatch) -> EventBatch:
    """Fold negative int hashes (a signed-int64 publisher) as the generic path does; cheap when there are none."""
    for ev in batch.events:
        if isinstance(ev, BlockStored | BlockRemoved) and ev.block_hashes and min(ev.block_hashes) < 0:
            ev.block_hashes = [h & _MASK64 for h in ev.block_hashes]
        if isinstance(ev, BlockStored) and ev.parent_block_hash is not None and ev.parent_block_hash < 0:
            ev.parent_block_hash &= _MASK64
    return batch


def decode_payload(payload: bytes | memoryview) -> EventBatch:
    """Decode one message payload, whatever the vLLM version's encoding; raises :class:`KVEventDecodeError`."""
    try:
        return _fold_negative(_fast_decoder.decode(payload))
    except msgspec.DecodeError:
        pass
    try:
        raw = _generic_decoder.decode(payload)
    except msgspec.DecodeError as exc:
        raise KVEventDecodeError(f"not msgpack: {exc}") from exc
    if isinstance(raw, dict):
        ts, events, rank = raw.get("ts"), raw.get("events"), raw.get("data_parallel_rank")
    elif isinstance(raw, list | tuple) and len(raw) >= 2:
        ts, events, rank = raw[0], raw[1], (raw[2] if len(raw) > 2 else None)
    else:
        raise KVEventDecodeError("payload must be [ts, events, data_parallel_rank]")
    if not isinstance(ts, int | float) or not isinstance(events, list | tuple):
        raise KVEventDecodeError("payload must be [ts: float, events: array, ...]")
    if rank is not None and not isinstance(rank, int):
        rank = None
    decoded = [ev for ev in map(_generic_event, events) if ev is not None]
    return EventBatch(float(ts), decoded, rank)


def _to_wire(ev: KVEvent, fmt: str) -> msgspec.Struct:
    arr = fmt == "array"
    if isinstance(ev, BlockStored):
        cls = _ArrStored if arr else _WireStored
        return cls(ev.block_hashes, ev.parent_block_hash, ev.token_ids, ev.block_size, ev.lora_id, ev.medium,
                   ev.lora_name, ev.extra_keys, ev.group_idx, ev.kv_cache_spec_kind)
    if isinstance(ev, BlockRemoved):
        return (_ArrRemoved if arr else _WireRemoved)(ev.block_hashes, ev.medium, ev.group_idx)
    if isinstance(ev, AllBlocksCleared):
        return _ArrCleared() if arr else _WireCleared()
    raise TypeError(f"not a KV event: {type(ev).__name__}")


def encode_payload(batch: EventBatch, fmt: Literal["map", "array"] = "map") -> bytes:
    """Encode a batch as vLLM 0.26 does (``fmt="map"``), or in the older array-per-event layout."""
    if fmt not in ("map", "array"):
        raise ValueError(f"fmt must be 'map' or 'array', not {fmt!r}")
    events = [_to_wire(ev, fmt) for ev in batch.events]
    return _encoder.encode(_WireBatch(batch.ts, events, batch.data_parallel_rank))


def make_batch(events: Sequence[KVEvent], ts: float, data_parallel_rank: int | None = 0) -> EventBatch:
    """Convenience constructor for publishers (the simulated engine)."""
    return EventBatch(ts, list(events), data_parallel_rank)
