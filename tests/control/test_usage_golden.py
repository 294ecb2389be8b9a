"""The ``usage`` of real vLLM answers (0.32: ``tests/golden/vllm-0.32``, ``--enable-prompt-tokens-details``; 0.26:
``tests/golden``) read by the router's parser: ``prompt_tokens_details.cached_tokens`` (whole blocks), in bodies and
stream tails; and their error bodies have the OpenAI shape the router answers with too."""

from __future__ import annotations

import json

import pytest

from llmd_kserve.control.usage import is_usage_only_event, parse_usage, usage_from_sse_tail
from llmd_kserve.errors import openai_error
from tests.wire import GOLDEN, GOLDEN_032


@pytest.mark.parametrize("name, prompt, cached", [
    ("completion.json", 467, 0), ("completion_cached.json", 467, 448),
    ("chat_completion.json", 329, 0), ("chat_completion_cached.json", 329, 320),
])
def test_bodies(name, prompt, cached):
    usage = parse_usage((GOLDEN_032 / name).read_bytes())
    assert usage is not None and usage.prompt_tokens == prompt and usage.completion_tokens == 4
    assert usage.prompt_tokens_details is not None and usage.prompt_tokens_details.cached_tokens == cached
    assert cached % 32 == 0 and cached <= (prompt - 1) // 32 * 32  # whole blocks, one prompt token left to compute


@pytest.mark.parametrize("name, prompt", [("completions_stream.sse", 467), ("chat_stream.sse", 329)])
def test_stream_tails(name, prompt):
    raw = (GOLDEN_032 / name).read_bytes()
    usage = usage_from_sse_tail(raw[-600:])
    assert usage is not None and usage.prompt_tokens == prompt and usage.completion_tokens == 3
    assert usage.prompt_tokens_details is not None and usage.prompt_tokens_details.cached_tokens == prompt // 32 * 32
    events = [e for e in raw.split(b"\n\n") if e.strip()]
    assert events[-1] == b"data: [DONE]" and is_usage_only_event(events[-2])
    assert not any(is_usage_only_event(e) for e in events[:-2])


def test_026_answers_without_prompt_tokens_details():
    """The 0.26 samples were taken without ``--enable-prompt-tokens-details``: no cached count (None), not 0."""
    usage = usage_from_sse_tail((GOLDEN / "completions_stream.sse").read_bytes()[-600:])
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens) == (2, 5)
    assert usage.prompt_tokens_details is None
    body = parse_usage((GOLDEN / "chat_completion.json").read_bytes())
    assert body is not None and body.prompt_tokens == 16 and body.prompt_tokens_details is None


@pytest.mark.parametrize("path, status", [(GOLDEN_032 / "error_too_long.json", 400),
                                          (GOLDEN_032 / "error_bad_model.json", 404),
                                          (GOLDEN_032 / "render_refused.json", 403), (GOLDEN / "error_too_long.json", 400)])
def test_error_bodies_have_the_router_s_shape(path, status):
    body = json.loads(path.read_text())
    err = body["error"]
    assert set(body) == set(openai_error("m", "t", None, status)) and err["code"] == status
    assert set(err) == set(openai_error("m", "t", None, status)["error"])
