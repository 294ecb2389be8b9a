"""Chained hashes of full KV blocks: the router's index keys, computed the same way everywhere."""

from __future__ import annotations

from collections.abc import Sequence

from llmd_kserve.types import BlockKey

ROOT_PARENT = 0
_MASK = (1 << 64) - 1


def block_key(parent: int, tokens: Sequence[int], seed: int = 0) -> BlockKey:
    """Hash of one full block given its parent's key; deterministic across processes (ints are not salted)."""
    return BlockKey(hash((seed, parent, *tokens)) & _MASK)


def block_keys(token_ids: Sequence[int], block_size: int, seed: int = 0, parent: int = ROOT_PARENT) -> list[BlockKey]:
    """Keys of every *full* block of ``token_ids``; a trailing partial block has no key (as in vLLM)."""
    keys: list[BlockKey] = []
    n_full = len(token_ids) // block_size
    for i in range(n_full):
        parent = hash((seed, parent, *token_ids[i * block_size : (i + 1) * block_size])) & _MASK
        keys.append(BlockKey(parent))
    return keys
