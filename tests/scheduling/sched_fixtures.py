"""Shared helpers of the scheduler, plugin and config tests: offline tokenizer, a KV index, the latency profile."""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest

from llmd_kserve.config.build import build_scheduler
from llmd_kserve.kvcache.events import BlockStored
from llmd_kserve.kvcache.hashing import block_keys
from llmd_kserve.kvcache.index import KVIndex
from llmd_kserve.latency import DEFAULT_PROFILE, load_profile
from llmd_kserve.plugins.base import PluginContext
from llmd_kserve.tokenizer import SimTokenizer
from llmd_kserve.types import Endpoint, EndpointId, EndpointMetrics, EndpointState, LLMRequest, RequestOutcome

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


def replay_decisions(config: str, roles: Sequence[str], *, requests: int, prefixes: int, prefix_len: int,
                     stale_s: Sequence[float], complete_p: float, seed: int) -> list:
    """Drive ``config`` with one seeded workload and return every decision (``ScheduleResult``): each request is
    one of ``prefixes`` shared prefixes plus a unique tail, on endpoints with ``roles`` whose loads and scrape ages
    (up to ``stale_s[i]`` seconds) are drawn per request; served prompts go into the KV index, and after each
    decision in-flight requests complete with probability ``complete_p``. The same arguments give the same
    sequence, so two runs with a code path switched differ only by what that path decides."""
    rng = random.Random(seed)
    index = KVIndex(max_keys=100_000)
    clock = [0.0]
    sched = build_scheduler(config, make_ctx(index, seed=1, clock=lambda: clock[0]))
    shared = [prompt(s, prefix_len) for s in range(prefixes)]
    inflight, out = [], []
    for i in range(requests):
        clock[0] += 0.01
        eps = [endpoint(n, role, waiting=rng.randrange(4), running=rng.randrange(8), kv_usage=rng.random(),
                        scraped_at=clock[0] - rng.random() * stale_s[n]) for n, role in enumerate(roles)]
        tokens = rng.choice(shared) + prompt(100 + i, rng.randrange(5, 80))
        req = request(f"r{i}", tokens)
        res = sched.schedule(req, eps)
        out.append(res)
        store(index, res.target, tokens)  # the engine caches what it served (KV events)
        inflight.append((req, res))
        while inflight and rng.random() < complete_p:
            done_req, done_res = inflight.pop(rng.randrange(len(inflight)))
            done = RequestOutcome(ok=True, prompt_tokens=done_res.prompt_tokens)
            if done_res.prefill is not None:
                sched.on_prefill_complete(done_req, done_res, done)
            sched.on_complete(done_req, done_res, done)
    return out
