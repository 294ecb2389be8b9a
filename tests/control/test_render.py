"""``--tokenizer render`` against engines answering with a real vLLM 0.32's bodies (``tests/golden/vllm-0.32``): the
list and object shapes of the two render endpoints, and engines that refuse render (403 without
``--enable-scale-out``, 404 on versions without it): said once, then ``/tokenize`` (the same ids), not per request."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from llmd_kserve.control.render import RenderError, RenderTokenizer, token_ids_of
from llmd_kserve.control.requests import ParsedRequest
from llmd_kserve.prompt import read_prompt
from tests.control.engines import lean_call
from tests.wire import GOLDEN, GOLDEN_032, golden032_json

REQUESTS = golden032_json("requests.json")
PROMPT_IDS = golden032_json("tokenize.json")["tokens"]
CHAT_IDS = golden032_json("chat_render.json")["token_ids"]


@dataclass
class GoldenEngine:
    """Serves the captured 0.32 answers; ``render``/``tokenize``: the status those paths answer (200: the sample)."""

    render: int = 200
    tokenize: int = 200
    calls: list[str] = field(default_factory=list)
    base: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.calls.append(request.path)
        refused = {403: golden032_json("render_refused.json"), 404: golden032_json("not_found.json")}
        status = self.tokenize if request.path == "/tokenize" else self.render
        if status != 200:
            return web.json_response(refused[status], status=status)
        chat = "messages" in body
        if request.path == "/tokenize":
            name = "tokenize_chat.json" if chat else "tokenize.json"
        else:
            name = "chat_render.json" if chat else "completions_render.json"
        return web.json_response(golden032_json(name))


@pytest.fixture
async def served() -> AsyncIterator[tuple[GoldenEngine, RenderTokenizer]]:
    engine = GoldenEngine()
    app = web.Application()
    for path in ("/v1/completions/render", "/v1/chat/completions/render", "/tokenize"):
        app.router.add_post(path, engine.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    engine.base = str(server.make_url("")).rstrip("/")
    with lean_call() as call:
        yield engine, RenderTokenizer(call, lambda: engine.base)
    await server.close()


def _req(kind: str, **extra: Any) -> ParsedRequest:
    body = dict(REQUESTS[kind], **extra)
    return ParsedRequest(kind=kind, body=body, model="tiny", stream=False, max_tokens=None,  # type: ignore[arg-type]
                         prompt=read_prompt(body, kind))  # type: ignore[arg-type]


async def test_both_render_shapes_give_the_engine_ids_and_are_cached(served):
    engine, render = served
    assert await render.token_ids(_req("completion")) == tuple(PROMPT_IDS)  # a list, one object per prompt
    assert await render.token_ids(_req("chat")) == tuple(CHAT_IDS)  # one object
    assert await render.token_ids(_req("completion")) == tuple(PROMPT_IDS)
    assert engine.calls == ["/v1/completions/render", "/v1/chat/completions/render"] and render.hits == 1


@pytest.mark.parametrize("status, said", [(403, "--enable-scale-out"), (404, "without render endpoints")])
async def test_a_refusing_engine_is_said_once_then_asked_with_tokenize(served, caplog, status, said):
    engine, render = served
    engine.render = status
    with caplog.at_level(logging.WARNING, "llmd_kserve.control.render"):
        for i in range(4):
            assert await render.token_ids(_req("completion", max_tokens=i)) == tuple(PROMPT_IDS)
            assert await render.token_ids(_req("chat", temperature=i)) == tuple(CHAT_IDS)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and said in warnings[0].getMessage()
    assert engine.calls.count("/v1/completions/render") == 1 and engine.calls.count("/v1/chat/completions/render") == 0
    assert engine.calls.count("/tokenize") == 2  # then cached by prompt: both prompts were the same each time
    assert render.way(engine.base) == "tokenize" and render.failures == 0


async def test_an_engine_refusing_tokenize_too_leaves_the_local_tokenizer(served, caplog):
    engine, render = served
    engine.render = engine.tokenize = 404
    with caplog.at_level(logging.WARNING, "llmd_kserve.control.render"):
        for _ in range(3):
            assert await render.token_ids(_req("completion")) is None
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING][1].count("local tokenizer") == 1
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 2
    assert engine.calls == ["/v1/completions/render", "/tokenize"]  # not asked again


async def test_other_failures_are_values_logged_once_per_kind(caplog):
    with lean_call() as call:
        render = RenderTokenizer(call, lambda: "http://127.0.0.1:9")  # nothing listens on port 9
        with caplog.at_level(logging.WARNING, "llmd_kserve.control.render"):
            for i in range(3):
                assert await render.token_ids(_req("completion", max_tokens=i)) is None
    assert render.failures == 3 and len(caplog.records) == 1


def test_026_and_032_render_answers_decode_alike():
    for folder in (GOLDEN, GOLDEN_032):
        completions = json.loads((folder / "completions_render.json").read_text())
        chat = json.loads((folder / "chat_render.json").read_text())
        assert isinstance(completions, list) and isinstance(chat, dict)  # the same shapes in both versions
        assert token_ids_of(completions) == tuple(completions[0]["token_ids"])
        assert token_ids_of(chat) == tuple(chat["token_ids"])
    assert token_ids_of(json.loads((GOLDEN / "tokenize.json").read_text())) == tuple(
        json.loads((GOLDEN / "tokenize.json").read_text())["tokens"])


def test_answer_shapes():
    assert token_ids_of([{"token_ids": [1, 2]}, {"token_ids": [3]}]) == (1, 2)
    assert token_ids_of({"token_ids": [4]}) == (4,) and token_ids_of({"count": 1, "tokens": [5]}) == (5,)
    for bad in ([], {"token_ids": "x"}, {"token_ids": [1.5]}, "ids", {"detail": "Not Found"}):
        with pytest.raises(RenderError):
            token_ids_of(bad)
