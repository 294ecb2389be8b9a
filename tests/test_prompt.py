"""The prompt read once: every completions and chat shape, the rendered strings in order, wrong shapes refused."""

from __future__ import annotations

import pytest

from llmd_kserve.errors import InvalidRequestError
from llmd_kserve.governance.request_text import prompt_text, request_text
from llmd_kserve.plugins.base import CycleState
from llmd_kserve.prompt import read_prompt
from llmd_kserve.scheduling.tokenize import TokenizeProducer
from llmd_kserve.tokenizer import SimTokenizer
from llmd_kserve.types import LLMRequest
from tests.scheduling.sched_fixtures import endpoint, make_ctx


@pytest.mark.parametrize("prompt, texts, ids", [
    ("hi", ("hi",), ()),
    (["a", "bc"], ("a", "bc"), ()),
    ([5, 6, 7], (), ((5, 6, 7),)),
    ([[5, 6], [7]], (), ((5, 6), (7,))),
])
def test_every_completions_shape(prompt, texts, ids):
    p = read_prompt({"prompt": prompt, "suffix": "end"}, "completion")
    assert (p.texts, p.ids, p.strings, p.sent) == (texts, ids, (*texts, "end"), prompt)
    assert p.num_prompts == max(len(texts), len(ids)) and p.num_ids == sum(map(len, ids))
    assert p.first_ids == (ids[0] if ids else None) and p.chars == sum(map(len, texts)) + 3
    assert p.field == "prompt" and p.num_messages == 0


def test_chat_strings_in_the_order_the_engine_renders_them():
    messages = [{"role": "system", "content": "be brief"},
                {"role": "user", "name": "ann", "content": [{"type": "text", "text": "hello"}]}]
    body = {"messages": messages, "tools": [{"type": "function", "function": {"name": "f"}}],
            "chat_template_kwargs": {"topic": "x"}, "chat_template": "{{ messages }}"}
    p = read_prompt(body, "chat")
    assert p.strings == ("system", "be brief", "user", "ann", "text", "hello",
                         "type", "function", "function", "name", "f", "topic", "x", "{{ messages }}")
    assert p.sent is messages and p.num_messages == 2 and p.num_prompts == 1 and p.field == "messages"
    assert p.chars == sum(map(len, p.strings)) and (p.texts, p.ids, p.first_ids) == ((), (), None)
    assert request_text(body, "chat").text == prompt_text(p).text == "\n".join(p.strings)


@pytest.mark.parametrize("kind, body, param", [
    ("completion", {}, "prompt"),
    ("completion", {"prompt": []}, "prompt"),
    ("completion", {"prompt": [1, "a"]}, "prompt"),
    ("completion", {"prompt": [[1], []]}, "prompt"),
    ("completion", {"prompt": [True]}, "prompt"),
    ("completion", {"prompt": "a", "suffix": 3}, "suffix"),
    ("chat", {}, "messages"),
    ("chat", {"messages": "hi"}, "messages"),
    ("chat", {"messages": [{"content": "hi"}]}, "messages[0]"),
    ("chat", {"messages": [{"role": "user", "content": ["hi"]}]}, "messages[0].content"),
    ("chat", {"messages": [{"role": "user", "content": 3}]}, "messages[0].content"),
])
def test_wrong_shapes_are_refused_with_the_field(kind, body, param):
    with pytest.raises(InvalidRequestError) as exc:
        read_prompt(body, kind)
    assert exc.value.status == 400 and exc.value.param == param


def test_the_tokenize_producer_reads_the_prompt_the_router_read():
    """The router's prompt goes with the request: the scheduler tokenizes it, not the body again."""
    producer = TokenizeProducer("t", TokenizeProducer.Params(cache_size=0), make_ctx())
    read = read_prompt({"prompt": ["first prompt", "second"]}, "completion")
    state = CycleState(LLMRequest("r", "m", {"prompt": "not this"}, prompt=read), [endpoint(0)])
    producer.produce(state)
    assert list(state.token_ids) == SimTokenizer().encode("first prompt")
    chat = read_prompt({"messages": [{"role": "user", "content": "hi"}]}, "chat")
    state = CycleState(LLMRequest("r", "m", {}, kind="chat", prompt=chat), [endpoint(0)])
    producer.produce(state)
    assert list(state.token_ids) == SimTokenizer().encode(SimTokenizer().apply_chat_template(chat.sent),
                                                          add_special_tokens=False)
