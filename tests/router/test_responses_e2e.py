"""``/v1/responses`` end to end: simulated engines that store responses, the router keeping each
``previous_response_id`` on the endpoint that stored it, and its errors (OpenAI-shaped)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator

import aiohttp
import openai

from llmd_kserve.engine_sim.server import running_engine
from llmd_kserve.router.app import RunningRouter, running_router

MODEL = "llama-8b-shape"


@contextlib.asynccontextmanager
async def stack(n: int = 3) -> AsyncIterator[tuple[list, RunningRouter, aiohttp.ClientSession]]:
    async with contextlib.AsyncExitStack() as st:
        engines = [await st.enter_async_context(running_engine(port=0, model=MODEL, time_scale=0.02, seed=i))
                   for i in range(n)]
        router = await st.enter_async_context(running_router(endpoints=[e.url for e in engines], config="sessions",
                                                             scrape_interval=0.02))
        yield engines, router, await st.enter_async_context(aiohttp.ClientSession())


async def respond(http: aiohttp.ClientSession, url: str, **body) -> tuple[int, dict, str | None]:
    """(status, JSON answer, endpoint that served it) of one non-streamed Responses request."""
    async with http.post(f"{url}/v1/responses", json={"model": MODEL, "max_output_tokens": 8, **body}) as r:
        return r.status, await r.json(), r.headers.get("x-llmd-endpoint")


def is_openai_error(answer: dict, param: str, code: int) -> bool:
    err = answer.get("error") or {}
    return (set(err) == {"message", "type", "param", "code"} and bool(err["message"]) and bool(err["type"])
            and err["param"] == param and err["code"] == code)


async def test_a_response_chain_stays_on_the_endpoint_that_stores_it() -> None:
    async with stack() as (engines, router, http):
        status, first, home = await respond(http, router.url, input="Plan a trip.", instructions="Be brief.")
        assert status == 200 and first["id"].startswith("resp_") and home in {e.url for e in engines}
        prev = first["id"]
        for i in range(4):  # every continuation: the engine found the stored conversation (else 404)
            status, nxt, where = await respond(http, router.url, input=f"And step {i}?", previous_response_id=prev)
            assert status == 200, nxt
            assert where == home and nxt["previous_response_id"] == prev
            assert nxt["usage"]["input_tokens"] > first["usage"]["input_tokens"]  # the history came along
            prev = nxt["id"]


async def test_a_streamed_response_is_learnt_from_its_created_event() -> None:
    async with stack() as (_engines, router, http):
        async with http.post(f"{router.url}/v1/responses", json={
                "model": MODEL, "input": "Stream this.", "max_output_tokens": 6, "stream": True}) as r:
            assert r.status == 200 and r.headers["content-type"].startswith("text/event-stream")
            home = r.headers["x-llmd-endpoint"]
            events = [json.loads(line[6:]) for line in (await r.text()).splitlines() if line.startswith("data: ")]
        assert events[0]["type"] == "response.created" and events[-1]["type"] == "response.completed"
        rid = events[0]["response"]["id"]
        status, nxt, where = await respond(http, router.url, input="Go on.", previous_response_id=rid)
        assert status == 200 and where == home


async def test_the_openai_client_continues_a_conversation_through_the_router() -> None:
    async with stack() as (_engines, router, _http):
        client = openai.AsyncOpenAI(base_url=f"{router.url}/v1", api_key="none", max_retries=0)
        try:
            first = await client.responses.create(model=MODEL, input="Hello", max_output_tokens=5)
            second = await client.responses.create(model=MODEL, input="More", max_output_tokens=5,
                                                   previous_response_id=first.id)
            assert second.previous_response_id == first.id and second.output_text
        finally:
            await client.close()


async def test_a_response_whose_endpoint_left_the_pool_is_404_and_unknown_ones_are_the_engines_call() -> None:
    async with stack() as (engines, router, http):
        status, first, home = await respond(http, router.url, input="Remember me.")
        router.state.set_endpoints([e.url for e in engines if e.url != home])
        status, answer, _ = await respond(http, router.url, input="Still there?", previous_response_id=first["id"])
        assert status == 404 and is_openai_error(answer, "previous_response_id", 404)
        # an id this router never saw is scheduled like a fresh request: the engine answers (404, as vLLM does)
        status, answer, _ = await respond(http, router.url, input="?", previous_response_id="resp_unknown")
        assert status == 404 and is_openai_error(answer, "response_id", 404)
        assert answer["error"]["message"] == "Response with id 'resp_unknown' not found."
        # store: false keeps nothing (on the engine, nor in the router)
        status, unstored, _ = await respond(http, router.url, input="Forget me.", store=False)
        assert status == 200
        status, answer, _ = await respond(http, router.url, input="?", previous_response_id=unstored["id"])
        assert status == 404


BAD = [
    ({"input": "x", "previous_response_id": 42}, "previous_response_id"),
    ({"input": "x", "previous_response_id": "not an id!"}, "previous_response_id"),
    ({"input": "x", "previous_response_id": ""}, "previous_response_id"),
    ({}, "input"),
    ({"input": []}, "input"),
    ({"input": [3]}, "input[0]"),
    ({"input": "x", "max_output_tokens": 0}, "max_output_tokens"),
    ({"input": "x", "store": "yes"}, "store"),
]


async def test_malformed_responses_requests_get_openai_shaped_400s() -> None:
    async with stack(1) as (_engines, router, http):
        for body, param in BAD:
            async with http.post(f"{router.url}/v1/responses", json={"model": MODEL, **body}) as r:
                assert r.status == 400, body
                assert is_openai_error(await r.json(), param, 400), body
