"""A test instrument, not an engine: an OpenAI-shaped upstream that reports what reached it (body hash, pick
headers, its own port) and answers SSE deterministically, with a settable vLLM queue for saturation."""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from aiohttp import web

SSE_EVENTS = 40


def sse_body(n: int = SSE_EVENTS) -> bytes:
    """The exact bytes every streamed answer carries (so relays can be compared byte for byte)."""
    events = [b'data: {"id":"x","object":"text_completion","choices":[{"index":0,"text":"tok%d"}]}\n\n' % i
              for i in range(n)]
    usage = (b'data: {"id":"x","object":"text_completion","choices":[],"usage":{"prompt_tokens":100,'
             b'"completion_tokens":%d,"total_tokens":%d,"prompt_tokens_details":{"cached_tokens":64}}}\n\n'
             % (n, 100 + n))
    return b"".join(events) + usage + b"data: [DONE]\n\n"


@dataclass
class Upstream:
    url: str
    port: int
    waiting: int = 0
    seen: list[dict] = field(default_factory=list)


@contextlib.asynccontextmanager
async def running_upstream(host: str = "127.0.0.1") -> AsyncIterator[Upstream]:
    state = Upstream("", 0)

    async def infer(request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        seen = {"port": state.port, "sha256": hashlib.sha256(raw).hexdigest(), "length": len(raw),
                "destination": request.headers.get("x-gateway-destination-endpoint"),
                "prefill": request.headers.get("x-prefiller-host-port"), "path": request.path}
        state.seen.append(seen)
        if json.loads(raw).get("stream"):
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "x-upstream-port": str(state.port)})
            await resp.prepare(request)
            body = sse_body()
            for i in range(0, len(body), 700):  # many small writes, as an engine streams tokens
                await resp.write(body[i:i + 700])
            await resp.write_eof()
            return resp
        answer = {**seen, "usage": {"prompt_tokens": 100, "completion_tokens": 5, "total_tokens": 105,
                                    "prompt_tokens_details": {"cached_tokens": 32}}}
        return web.json_response(answer, headers={"x-upstream-port": str(state.port)})

    async def metrics(_: web.Request) -> web.Response:
        text = (f'vllm:num_requests_waiting{{model_name="m"}} {state.waiting}\n'
                'vllm:num_requests_running{model_name="m"} 0\nvllm:kv_cache_usage_perc{model_name="m"} 0.1\n')
        return web.Response(text=text)

    async def models(_: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "m", "object": "model"}]})

    app = web.Application(client_max_size=64 << 20)
    app.router.add_post("/v1/completions", infer)
    app.router.add_post("/v1/chat/completions", infer)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/health", models)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, 0)
    await site.start()
    state.port = runner.addresses[0][1]
    state.url = f"http://{host}:{state.port}"
    try:
        yield state
    finally:
        await runner.cleanup()
