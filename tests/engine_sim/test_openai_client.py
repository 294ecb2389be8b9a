"""The official ``openai`` client against the simulated engine: completions, chat, streaming."""

from __future__ import annotations

import openai
import pytest

from llmd_kserve.engine_sim.server import running_engine


@pytest.fixture
async def client():
    async with running_engine(time_scale=0.0) as eng, \
            openai.AsyncOpenAI(base_url=eng.url + "/v1", api_key="unused", max_retries=0) as c:
        yield c


async def test_completion(client):
    r = await client.completions.create(model="llama-8b-shape", prompt="Once upon a time", max_tokens=7,
                                        extra_body={"ignore_eos": True})
    assert r.object == "text_completion" and r.model == "llama-8b-shape"
    assert r.choices[0].finish_reason == "length" and r.choices[0].text
    assert r.usage.completion_tokens == 7 and r.usage.prompt_tokens > 0
    assert r.usage.prompt_tokens_details.cached_tokens == 0


async def test_completion_token_prompts_and_batch(client):
    r = await client.completions.create(model="llama-8b-shape", prompt=[[5] * 40, [6] * 40], max_tokens=3)
    assert [c.index for c in r.choices] == [0, 1]
    assert r.usage.prompt_tokens == 80 and r.usage.completion_tokens == 6


async def test_chat(client):
    r = await client.chat.completions.create(model="llama-8b-shape", max_completion_tokens=4,
                                             messages=[{"role": "user", "content": "Say hi"}])
    assert r.object == "chat.completion" and r.choices[0].message.role == "assistant"
    assert r.usage.completion_tokens == 4 and r.choices[0].finish_reason == "length"


async def test_prefix_cache_reported_in_usage(client):
    prompt = "the same long system prompt " * 40
    await client.completions.create(model="llama-8b-shape", prompt=prompt, max_tokens=1)
    r = await client.completions.create(model="llama-8b-shape", prompt=prompt + "and a question", max_tokens=1)
    cached = r.usage.prompt_tokens_details.cached_tokens
    assert cached > 0 and cached % 16 == 0 and cached < r.usage.prompt_tokens


async def test_streaming_completion(client):
    stream = await client.completions.create(model="llama-8b-shape", prompt="Hello", max_tokens=6, stream=True,
                                             stream_options={"include_usage": True})
    chunks = [c async for c in stream]
    text_chunks = [c for c in chunks if c.choices]
    assert len(text_chunks) == 6 and text_chunks[-1].choices[0].finish_reason == "length"
    assert chunks[-1].usage.completion_tokens == 6


async def test_streaming_chat(client):
    stream = await client.chat.completions.create(model="llama-8b-shape", max_tokens=5, stream=True,
                                                  messages=[{"role": "user", "content": "hi"}],
                                                  stream_options={"include_usage": True})
    chunks = [c async for c in stream]
    assert chunks[0].choices[0].delta.role == "assistant"
    content = [c for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(content) == 5
    assert [c for c in chunks if c.choices][-1].choices[0].finish_reason == "length"
    assert chunks[-1].usage.completion_tokens == 5


async def test_stop_string(client):
    first = await client.completions.create(model="llama-8b-shape", prompt="abc", max_tokens=12)
    text = first.choices[0].text
    stop = text[len(text) // 2 : len(text) // 2 + 3]
    r = await client.completions.create(model="llama-8b-shape", prompt="abc", max_tokens=12, stop=[stop])
    assert r.choices[0].finish_reason == "stop" and stop not in r.choices[0].text
    assert text.startswith(r.choices[0].text)


async def test_errors_raise_openai_exceptions(client):
    with pytest.raises(openai.BadRequestError) as exc:
        await client.completions.create(model="llama-8b-shape", prompt="x", max_tokens=10**6)
    assert exc.value.status_code == 400
    with pytest.raises(openai.NotFoundError):
        await client.completions.create(model="gpt-5", prompt="x", max_tokens=1)
    models = await client.models.list()
    assert [m.id for m in models.data] == ["llama-8b-shape"]
