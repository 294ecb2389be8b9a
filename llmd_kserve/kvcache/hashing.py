"""Chained hashes of full KV blocks: the router's index keys, computed the same way everywhere.

The keys are internal to the router: the KV-event index recomputes them from the engines' ``BlockStored`` token ids
and the scheduler from the prompt, both with :func:`block_keys` (engines keep their own block hashes; LoRA and
multimodal extra keys are not part of router keys), so only this function has to agree with itself. A key is
Python's tuple hash (xxHash-based, deterministic for ints across processes) of ``(parent key, block tokens)``; the
chain starts from a root derived from ``seed``. Nesting the block's tuple costs one 2-tuple per block instead of
concatenating an 18-tuple (the key before), ~30% less per block, same 64-bit hash quality.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from llmd_kserve.types import BlockKey

ROOT_PARENT = 0
"""``parent`` for a chain's first block (a prompt's start)."""


def _root(seed: int) -> int:
    return hash((seed, ROOT_PARENT, -1))


def block_key(parent: int, tokens: Sequence[int], seed: int = 0) -> BlockKey:
    """Hash of one full block given its parent's key; deterministic across processes (ints are not salted)."""
    return BlockKey(hash((_root(seed) if parent == ROOT_PARENT else parent, tuple(tokens))))


def block_keys(token_ids: Sequence[int], block_size: int, seed: int = 0, parent: int = ROOT_PARENT) -> list[BlockKey]:
    """Keys of every *full* block of ``token_ids``; a trailing partial block has no key (as in vLLM)."""
    keys: list[int] = []
    append = keys.append
    if parent == ROOT_PARENT:
        parent = _root(seed)
    it = iter(token_ids)
    for block in zip(*[it] * block_size, strict=False):  # full blocks only: zip stops at the shortest, dropping a partial tail
        parent = hash((parent, block))  # the same tuple, hence key, as block_key(parent, block, seed)
        append(parent)
    return cast(list[BlockKey], keys)  # BlockKey is a NewType of int: no call per block
