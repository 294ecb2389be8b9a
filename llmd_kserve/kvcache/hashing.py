"""Chained hashes of full KV blocks: the router's index keys, computed the same way everywhere."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from llmd_kserve.types import BlockKey

ROOT_PARENT = 0
_MASK = (1 << 64) - 1


def block_key(parent: int, tokens: Sequence[int], seed: int = 0) -> BlockKey:
    """Hash of one full block given its parent's key; deterministic across processes (ints are not salted)."""
    return BlockKey(hash((seed, parent, *tokens)) & _MASK)


def block_keys(token_ids: Sequence[int], block_size: int, seed: int = 0, parent: int = ROOT_PARENT) -> list[BlockKey]:
    """Keys of every *full* block of ``token_ids``; a trailing partial block has no key (as in vLLM)."""
    keys: list[int] = []
    append = keys.append
    it = iter(token_ids)
    for block in zip(*[it] * block_size, strict=False):  # full blocks only: zip stops at the shortest, dropping a partial tail
        parent = hash((seed, parent) + block) & _MASK  # the same tuple, hence key, as block_key(parent, block, seed)
        append(parent)
    return cast(list[BlockKey], keys)  # BlockKey is a NewType of int: no call per block
