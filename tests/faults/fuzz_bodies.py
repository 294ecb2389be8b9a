"""Hypothesis strategies for OpenAI request bodies, valid and not (the fault report's fuzz, repeatable and seeded)."""

from __future__ import annotations

import json

from hypothesis import strategies as st

_leaf = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
                  st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=16))
ANY = st.recursive(_leaf, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
                   max_leaves=12)
_small = st.integers(min_value=-3, max_value=24)
_message = st.fixed_dictionaries({"role": st.sampled_from(["user", "system", "assistant", "tool"]) | ANY},
                                 optional={"content": st.text(max_size=40) | st.lists(
                                     st.fixed_dictionaries({"type": st.just("text"), "text": st.text(max_size=20)})
                                     | ANY, max_size=3) | ANY, "name": st.text(max_size=10) | ANY})
_FIELDS = {
    "model": st.sampled_from(["llama-8b-shape", "nope"]) | ANY,
    "prompt": st.text(max_size=60) | st.lists(st.integers(-5, 40000), max_size=24)
    | st.lists(st.text(max_size=10), max_size=4) | st.lists(st.lists(st.integers(0, 100), max_size=5), max_size=3)
    | ANY,
    "messages": st.lists(_message, max_size=3) | ANY,
    "max_tokens": _small | ANY, "max_completion_tokens": _small | ANY,
    "stream": st.booleans() | ANY,
    "stream_options": st.fixed_dictionaries({}, optional={"include_usage": st.booleans() | ANY}) | ANY,
    "temperature": st.floats(-1, 3, allow_nan=False) | ANY, "top_p": st.floats(0, 1) | ANY,
    "n": _small | ANY, "stop": st.text(max_size=5) | st.lists(st.text(max_size=5), max_size=3) | ANY,
    "ignore_eos": st.booleans() | ANY, "user": st.text(max_size=10) | ANY,
    "kv_transfer_params": ANY, "logprobs": ANY, "echo": ANY,
}
BODY = st.fixed_dictionaries({}, optional=_FIELDS).map(lambda d: json.dumps(d).encode())
"""A JSON object with any subset of the usual fields, each well-typed or not."""
RAW = st.binary(max_size=80) | BODY.map(lambda b: b[: len(b) // 2])
"""Bytes that are not a valid request (random, or a body cut in half)."""
_common = {"max_tokens": st.integers(1, 8), "stream": st.booleans(), "temperature": st.floats(0, 2),
           "stop": st.text(max_size=3), "user": st.text(max_size=8), "model": st.just("llama-8b-shape")}
_VALID_COMPLETION = st.fixed_dictionaries(
    {"prompt": st.text(min_size=1, max_size=200) | st.lists(st.integers(3, 31999), min_size=1, max_size=64)},
    optional={**_common, "extra": ANY})
_VALID_CHAT = st.fixed_dictionaries(
    {"messages": st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "system"]),
                                                 "content": st.text(max_size=80)}), min_size=1, max_size=3)},
    optional={**_common, "extra": ANY})


def _with_usage(d: dict) -> dict:
    return {**d, "stream_options": {"include_usage": True}} if d.get("stream") and len(d) % 2 else d


REQUEST = st.one_of(
    st.tuples(st.sampled_from(["/v1/completions", "/v1/chat/completions"]), BODY | RAW),
    st.tuples(st.just("/v1/completions"), _VALID_COMPLETION.map(_with_usage).map(lambda d: json.dumps(d).encode())),
    st.tuples(st.just("/v1/chat/completions"), _VALID_CHAT.map(_with_usage).map(lambda d: json.dumps(d).encode())),
)
"""(route, body): a third fuzzed or broken bodies, two thirds well-formed requests with random values."""
