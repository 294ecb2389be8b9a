"""The tokenize producer's text cache keeps a prompt's token count and block keys, not its ids, for texts seen more
than once: a repeated text gets the same ids (tokenized again only when read) and keys as a fresh one."""

from __future__ import annotations

import dataclasses

from llmd_kserve.kvcache.hashing import block_keys
from llmd_kserve.plugins.base import CycleState
from llmd_kserve.scheduling.tokenize import TokenizeProducer
from llmd_kserve.tokenizer import SimTokenizer
from llmd_kserve.types import LLMRequest
from tests.scheduling.sched_fixtures import BLOCK, endpoint, make_ctx

TEXT = " ".join(f"word{i % 97} and {i}" for i in range(400))


def _state(producer: TokenizeProducer, body: dict, kind: str = "completion") -> CycleState:
    state = CycleState(LLMRequest("r", "m", body, kind=kind), [endpoint(0)])
    producer.produce(state)
    return state


class _CountingTokenizer(SimTokenizer):
    def __init__(self) -> None:
        self.calls = 0

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        self.calls += 1
        return super().encode(text, add_special_tokens)


def test_a_repeated_text_gets_the_same_ids_and_keys_from_the_cache():
    tok = _CountingTokenizer()
    ctx = dataclasses.replace(make_ctx(), tokenizer=tok)
    producer = TokenizeProducer("t", TokenizeProducer.Params(), ctx)
    want = SimTokenizer().encode(TEXT)
    first = _state(producer, {"prompt": TEXT})
    assert list(first.token_ids) == want and list(first.block_keys) == block_keys(want, BLOCK)
    assert tok.calls == 1 and not producer._cache  # seen once: only its hash is remembered
    second = _state(producer, {"prompt": TEXT})
    assert tok.calls == 2 and list(second.token_ids) == want and len(producer._cache) == 1  # admitted
    again = _state(producer, {"prompt": TEXT})
    assert tok.calls == 2  # a cache hit: the count and keys, no tokenizing
    assert len(again.token_ids) == len(want) and again.prompt_tokens == len(want)
    assert tuple(again.block_keys) == tuple(first.block_keys)
    assert list(again.token_ids) == want and again.token_ids[3] == want[3] and list(again.token_ids[:5]) == want[:5]
    assert tok.calls == 3  # reading the ids tokenizes again, once
    assert list(again.token_ids) == want and tok.calls == 3


def test_chat_and_batch_prompts_and_ids_go_the_same_way():
    producer = TokenizeProducer("t", TokenizeProducer.Params(), make_ctx())
    msgs = [{"role": "user", "content": TEXT}]
    chat = SimTokenizer().encode(SimTokenizer().apply_chat_template(msgs))
    for _ in range(3):
        assert list(_state(producer, {"messages": msgs}, kind="chat").token_ids) == chat
        assert list(_state(producer, {"prompt": [TEXT, "other"]}).token_ids) == SimTokenizer().encode(TEXT)
    ids = _state(producer, {"prompt": [5, 6, 7] * 20})
    assert ids.token_ids == (5, 6, 7) * 20 and list(ids.block_keys) == block_keys((5, 6, 7) * 20, BLOCK)
    assert list(_state(producer, {"prompt": TEXT}).token_ids) == SimTokenizer().encode(TEXT)


def test_the_cache_is_bounded_and_can_be_off():
    tok = _CountingTokenizer()
    ctx = dataclasses.replace(make_ctx(), tokenizer=tok)
    producer = TokenizeProducer("t", TokenizeProducer.Params(cache_size=2), ctx)
    for text in ("a b c", "a b c", "d e f", "d e f", "g h i", "g h i", "a b c", "g h i"):
        _state(producer, {"prompt": text})
    assert tok.calls == 7 and [t for _, t in producer._cache] == ["d e f", "g h i"]  # "a b c" was evicted by the third
    for text in ("x", "y", "z", "x"):  # seen once each: "x" was forgotten (two remembered), so not admitted
        _state(producer, {"prompt": text})
    assert [t for _, t in producer._cache] == ["d e f", "g h i"] and tok.calls == 11
    off = TokenizeProducer("t", TokenizeProducer.Params(cache_size=0), ctx)
    for _ in range(3):
        _state(off, {"prompt": "x y"})
    assert tok.calls == 14 and not off._cache and not off._seen
