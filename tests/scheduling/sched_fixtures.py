"""Shared helpers of the scheduler, plugin and config tests: offline tokenizer, a KV index, the latency profile."""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest

from llmd_kserve.kvcache.events import BlockStored
from llmd_kserve.kvcache.hashing import block_keys
from llmd_kserve.kvcache.index import KVIndex
from llmd_kserve.latency import DEFAULT_PROFILE, load_profile
from llmd_kserve.plugins.base import PluginContext
from llmd_kserve.tokenizer import SimTokenizer
from llmd_kserve.types import Endpoint, EndpointId, EndpointMetrics, EndpointState, LLMRequest

BLOCK = 16


def store(index: KVIndex, endpoint: str, tokens: Sequence[int]) -> None:
    """Make ``index`` believe ``endpoint`` cached every full block of ``tokens`` (one BlockStored event)."""
    n = len(tokens) // BLOCK
    hashes = [hash(("engine", endpoint, i, *tokens[: (i + 1) * BLOCK])) for i in range(n)]
    index.apply(EndpointId(endpoint), [BlockStored(hashes, None, list(tokens[: n * BLOCK]), BLOCK)])


def make_ctx(index=None, seed: int = 0, clock=None) -> PluginContext:
    return PluginContext(
        tokenizer=SimTokenizer(), index=index, rng=random.Random(seed), clock=clock or (lambda: 0.0),
        profile=load_profile(DEFAULT_PROFILE), block_size=BLOCK,
    )


def eid(i: int) -> EndpointId:
    return EndpointId(f"http://10.0.0.{i}:8000")


def endpoint(i: int, role: str = "both", **metrics) -> EndpointState:
    metrics.setdefault("stale", False)
    return EndpointState(Endpoint(eid(i), role=role), EndpointMetrics(**metrics))


def request(rid: str, tokens: Sequence[int], **kw) -> LLMRequest:
    return LLMRequest(request_id=rid, model="m", body={}, token_ids=tuple(tokens), **kw)


def prompt(seed: int, n: int) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(3, 32000) for _ in range(n)]


def keys_of(tokens: Sequence[int]) -> list[int]:
    return block_keys(tokens, BLOCK)


@pytest.fixture
def index() -> KVIndex:
    return KVIndex(max_keys=100_000)
