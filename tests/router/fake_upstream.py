"""A fake OpenAI upstream (tiny aiohttp app) for proxy tests that need failure modes an engine does not have."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from llmd_kserve.stack.procs import free_port


@dataclass
class FakeUpstream:
    """Answers completions like vLLM; ``status`` forces an error status, ``token_delay`` paces streamed tokens."""

    status: int = 200
    tokens: int = 4
    token_delay: float = 0.0
    cached_tokens: int = 0
    seen: list[dict[str, Any]] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    renders: list[dict[str, Any]] = field(default_factory=list)
    finished: list[str] = field(default_factory=list)
    url: str = ""

    async def completions(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        rid = request.headers.get("x-request-id", "")
        self.seen.append({"body": body, "headers": request.headers.copy()})
        if self.status != 200:
            err = {"error": {"message": "boom", "type": "InternalServerError", "param": None, "code": self.status}}
            return web.json_response(err, status=self.status)
        usage = {"prompt_tokens": 10, "completion_tokens": self.tokens, "total_tokens": 10 + self.tokens,
                 "prompt_tokens_details": {"cached_tokens": self.cached_tokens}}
        if not body.get("stream"):
            return web.json_response({"id": "cmpl-1", "object": "text_completion", "model": body.get("model"),
                                      "choices": [{"index": 0, "text": "x" * self.tokens, "finish_reason": "length"}],
                                      "usage": usage})
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        try:
            for i in range(self.tokens):
                if self.token_delay:
                    await asyncio.sleep(self.token_delay)
                chunk = {"id": "cmpl-1", "object": "text_completion", "model": body.get("model"),
                         "choices": [{"index": 0, "text": f"t{i}", "finish_reason": None}]}
                await resp.write(b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n")
            if (body.get("stream_options") or {}).get("include_usage"):
                final = {"id": "cmpl-1", "object": "text_completion", "model": body.get("model"), "choices": [],
                         "usage": usage}
                await resp.write(b"data: " + json.dumps(final, separators=(",", ":")).encode() + b"\n\n")
            await resp.write(b"data: [DONE]\n\n")
        except (asyncio.CancelledError, ConnectionResetError):
            self.cancelled.append(rid)
            raise
        self.finished.append(rid)
        return resp

    async def render(self, request: web.Request) -> web.Response:
        """vLLM 0.26's render shape: a list per prompt for completions, one object for chat; ids = 100 + position."""
        body = await request.json()
        self.renders.append(body)
        n = len(json.dumps(body.get("prompt", body.get("messages"))))
        result = {"request_id": "r", "token_ids": [100 + i for i in range(n)], "model": body.get("model")}
        return web.json_response(result if "messages" in body else [result])

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "fake-model", "object": "model"}]})

    async def metrics(self, request: web.Request) -> web.Response:
        text = ('vllm:num_requests_running{model_name="fake-model"} 0.0\n'
                'vllm:num_requests_waiting{model_name="fake-model"} 0.0\n'
                'vllm:kv_cache_usage_perc{model_name="fake-model"} 0.0\n')
        return web.Response(text=text, content_type="text/plain")


@contextlib.asynccontextmanager
async def running_fake(**kwargs: Any) -> AsyncIterator[FakeUpstream]:
    fake = FakeUpstream(**kwargs)
    app = web.Application()
    app.router.add_post("/v1/completions", fake.completions)
    app.router.add_post("/v1/chat/completions", fake.completions)
    app.router.add_get("/v1/models", fake.models)
    app.router.add_post("/v1/completions/render", fake.render)
    app.router.add_post("/v1/chat/completions/render", fake.render)
    app.router.add_get("/metrics", fake.metrics)
    runner = web.AppRunner(app, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    fake.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield fake
    finally:
        await runner.cleanup()


def closed_port_url() -> str:
    """A URL on 127.0.0.1 where nothing listens."""
    return f"http://127.0.0.1:{free_port()}"
