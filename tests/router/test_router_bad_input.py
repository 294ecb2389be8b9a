"""Bad input at the router: OpenAI-shaped JSON errors with 4xx codes, and no leaked in-flight state."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from llmd_kserve.control.settings import DEFAULT_MAX_BODY_BYTES as MAX_BODY_BYTES
from llmd_kserve.control.settings import RouterSettings
from llmd_kserve.engine_sim.server import running_engine
from llmd_kserve.errors import ConfigError
from llmd_kserve.router.app import running_router

MODEL = "llama-8b-shape"


def _inflight(router) -> object:
    return next(p for p in router.state.scheduler.current.producers if p.type == "inflight-load-producer")


def _assert_openai_error(body: dict, status: int) -> None:
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["code"] == status and isinstance(err["message"], str) and err["message"]


@pytest.fixture
async def stack():
    async with running_engine(port=0, model=MODEL, time_scale=0.0) as eng, \
            running_router(endpoints=[eng.url], scrape_interval=0.02) as router, aiohttp.ClientSession() as s:
        yield eng, router, s


BAD = [
    ("/v1/completions", b"{bad", 400, None),
    ("/v1/completions", b"[1, 2]", 400, None),
    ("/v1/completions", b"", 400, None),
    ("/v1/completions", b'{"model": "llama-8b-shape", "prompt": 5}', 400, "prompt"),
    ("/v1/completions", b'{"model": "llama-8b-shape", "prompt": "hi", "max_tokens": "x"}', 400, "max_tokens"),
    ("/v1/completions", b'{"model": "llama-8b-shape", "prompt": "hi", "max_tokens": 99999}', 400, "max_tokens"),
    ("/v1/completions", b'{"model": "llama-8b-shape", "prompt": "hi", "n": 2}', 400, "n"),
    ("/v1/completions", b'{"model": "nosuch", "prompt": "hi"}', 404, "model"),
    ("/v1/completions", b'{"model": "llama-8b-shape", "prompt": ""}', 400, None),
    ("/v1/chat/completions", b'{"model": "llama-8b-shape", "messages": "hi"}', 400, "messages"),
    ("/v1/chat/completions", b'{"model": "llama-8b-shape", "messages": [{"role": "user", "content": "x"}], '
                             b'"stream": "yes"}', 400, "stream"),
]


@pytest.mark.parametrize("path, body, status, param", BAD)
async def test_bad_requests_get_openai_errors_and_release_state(stack, path, body, status, param):
    eng, router, s = stack
    async with s.post(router.url + path, data=body, headers={"Content-Type": "application/json"}) as r:
        assert r.status == status
        assert r.content_type == "application/json"
        payload = await r.json()
    _assert_openai_error(payload, status)
    if param is not None:
        assert payload["error"]["param"] == param
    assert _inflight(router).load(eng.url) == (0, 0)
    async with s.post(router.url + "/v1/completions", json={"model": MODEL, "prompt": "hi", "max_tokens": 2}) as r:
        assert r.status == 200  # the router still serves


@pytest.mark.parametrize("method, path, status", [("GET", "/v1/completions", 405), ("DELETE", "/v1/models", 405),
                                                  ("GET", "/nope", 404), ("POST", "/v1/nope", 404)])
async def test_unknown_routes_and_methods_are_json(stack, method, path, status):
    _eng, router, s = stack
    async with s.request(method, router.url + path) as r:
        assert r.status == status
        assert r.content_type == "application/json"
        _assert_openai_error(await r.json(), status)
        if status == 405:
            assert "POST" in r.headers["Allow"] or "GET" in r.headers["Allow"]


async def test_oversized_body_is_json_413(stack):
    _eng, router, s = stack
    async with s.post(router.url + "/v1/completions", data=b"x" * (MAX_BODY_BYTES + 1),
                      headers={"Content-Type": "application/json"}) as r:
        assert r.status == 413
        _assert_openai_error(await r.json(), 413)


async def test_missing_content_type_is_accepted(stack):
    _eng, router, s = stack
    async with s.post(router.url + "/v1/completions", data=b'{"model": "llama-8b-shape", "prompt": "hi", '
                                                           b'"max_tokens": 2}') as r:
        assert r.status == 200


async def _chunks(*parts: bytes):
    for part in parts:
        yield part


@pytest.mark.parametrize("how", ["plain", "query", "expect-100", "chunked"])
async def test_every_request_form_is_served_and_checked_alike(stack, how):
    """The OpenAI routes answer a plain POST, one with a query string, one that waits for ``100 Continue`` and a
    chunked body the same way: 200 for a good body, OpenAI-shaped 400 for a bad one."""
    _eng, router, s = stack
    url = router.url + "/v1/completions" + ("?trace=1" if how == "query" else "")
    for body, status in ((b'{"model": "llama-8b-shape", "prompt": "hi", "max_tokens": 2}', 200), (b"{bad", 400)):
        data = _chunks(body[:5], body[5:]) if how == "chunked" else body
        async with s.post(url, data=data, expect100=how == "expect-100",
                          headers={"Content-Type": "application/json"}) as r:
            assert r.status == status
            payload = await r.json()
        if status == 200:
            assert payload["choices"][0]["text"]
        else:
            _assert_openai_error(payload, status)


@pytest.mark.parametrize("stream", [False, True])
async def test_client_disconnect_before_the_answer_releases_inflight_load(stream):
    async with running_engine(port=0, model=MODEL, time_scale=1.0) as eng, \
            running_router(endpoints=[eng.url], scrape_interval=0.02) as router, aiohttp.ClientSession() as s:

        async def call() -> None:
            body = {"model": MODEL, "prompt": "hello " * 50, "max_tokens": 4000, "ignore_eos": True, "stream": stream}
            async with s.post(router.url + "/v1/completions", json=body) as r:
                await r.read()

        task = asyncio.create_task(call())
        for _ in range(500):  # wait until the request is scheduled and running on the engine
            if _inflight(router).load(eng.url)[0] == 1 and eng.core.num_running == 1:
                break
            await asyncio.sleep(0.01)
        assert _inflight(router).load(eng.url)[0] == 1
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        for _ in range(500):
            if _inflight(router).load(eng.url) == (0, 0) and eng.core.num_running == 0:
                break
            await asyncio.sleep(0.01)
        assert _inflight(router).load(eng.url) == (0, 0)
        assert eng.core.num_running == 0  # the engine aborted the request, as vLLM does on disconnect


@pytest.mark.parametrize("field, value", [("scrape_interval", 0), ("max_attempts", 0), ("max_prompt_chars", -1),
                                          ("connect_timeout", -1.0), ("audit", "loud")])
def test_bad_settings_raise_config_error_naming_the_field(field, value):
    with pytest.raises(ConfigError) as exc:
        RouterSettings(**{field: value})
    assert exc.value.path == field
