"""FAKE engine from the 2026-11 fault report (``shared/FAULTS-2026-11.md``): a vLLM look-alike whose one defect is
chosen by MODE. Run as ``python tests/faults/fake_engine.py PORT MODE`` (PORT 0: any free port, printed).

MODE: ``gen-hang`` (generation never answers, /metrics looks idle), ``inf-once`` (first /metrics says +Inf waiting),
``neg`` (/metrics says -1e18 waiting), ``garbage`` (/metrics is random bytes), ``ok``.
"""

import asyncio
import os
import sys

from aiohttp import web

port, mode = int(sys.argv[1]), sys.argv[2]
G = ('vllm:num_requests_waiting{engine="0"} %s\nvllm:num_requests_running{engine="0"} 0\n'
     'vllm:kv_cache_usage_perc{engine="0"} 0\n')
n = 0


async def health(r):
    return web.Response()


async def models(r):
    return web.json_response({"object": "list", "data": [{"id": "llama-8b-shape", "object": "model"}]})


async def metrics(r):
    global n
    n += 1
    if mode == "garbage":
        return web.Response(body=os.urandom(4096))
    if mode == "inf-once" and n == 1:
        return web.Response(text=G % "+Inf")
    return web.Response(text=G % ("-1e18" if mode == "neg" else "0"))


async def gen(r):
    await r.read()
    if mode == "gen-hang":
        await asyncio.sleep(3600)
    return web.json_response({"object": "text_completion",
                              "choices": [{"index": 0, "text": "fake", "finish_reason": "length"}]})


async def main():
    app = web.Application()
    app.add_routes([web.get("/health", health), web.get("/v1/models", models), web.get("/metrics", metrics),
                    web.post("/v1/completions", gen), web.get("/scrapes", lambda r: web.json_response(n))])
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    print(f"fake engine listening on http://127.0.0.1:{runner.addresses[0][1]}", flush=True)
    await asyncio.Event().wait()


asyncio.run(main())
