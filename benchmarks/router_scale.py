"""Scale: one router in front of 64 / 128 light-weight simulated endpoints at ~1,000 small requests/s.

Processes: a *fleet* (this script with ``--fleet N``: one asyncio process serving N fake vLLM endpoints on their
own ports: ``/metrics`` with the endpoint's in-flight count, ``/health``, ``/v1/models``, non-streaming
``/v1/completions`` answered after ``--service-ms``, and a ZMQ KV-event publisher per endpoint sending one
``BlockStored`` per request with the prompt's full blocks), the router (``llmd-kserve router --config
precise-prefix``, KV-event subscriber and adaptive scraper on) and this script as an open-loop load generator
(Poisson arrivals, prompts of ~60 tokens from 256 shared 32-token prefixes). Per run: achieved rate, client
latency p50/p99, errors, the router's CPU (% of a core) and RSS, scheduling-decision p50/p99 (its histogram),
KV index keys and events/s ingested, and /metrics scrapes/s under load and while idle.

    PYTHONPATH=. .venv/bin/python benchmarks/router_scale.py [--endpoints 64 128] [--rate 1000] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from router_overhead import free_port, pct, wait_ready  # noqa: E402
from router_vs_vllm_router import cpu_seconds, spawn  # noqa: E402

from llmd_kserve.aio import run as aio_run  # noqa: E402

PY = sys.executable


# --- the fleet (a child process) -----------------------------------------------------------------------------------

async def fleet(n: int, service_ms: float, block_size: int) -> None:
    from aiohttp import web

    from llmd_kserve.engine_sim.publisher import KVEventPublisher
    from llmd_kserve.kvcache.events import BlockStored
    from llmd_kserve.tokenizer import SimTokenizer

    tok = SimTokenizer()
    inflight = [0] * n
    scrapes = [0]
    by_port: dict[int, int] = {}
    pubs = [KVEventPublisher("tcp://127.0.0.1:0", "kv@fleet") for _ in range(n)]
    seq = [0]

    def idx(request: web.Request) -> int:
        return by_port[request.transport.get_extra_info("sockname")[1]]  # type: ignore[union-attr]

    async def metrics(request: web.Request) -> web.Response:
        scrapes[0] += 1
        i = idx(request)
        return web.Response(text=f'vllm:num_requests_running{{model_name="m"}} {inflight[i]}\n'
                                 f'vllm:num_requests_waiting{{model_name="m"}} 0\n'
                                 f'vllm:kv_cache_usage_perc{{model_name="m"}} 0.1\n'
                                 f'vllm:cache_config_info{{block_size="{block_size}",num_gpu_blocks="10000"}} 1\n')

    async def health(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def scrape_count(_: web.Request) -> web.Response:
        return web.json_response({"scrapes": scrapes[0]})

    async def models(_: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "m", "object": "model"}]})

    async def completions(request: web.Request) -> web.Response:
        i = idx(request)
        body = await request.json()
        inflight[i] += 1
        try:
            ids = tok.encode(body["prompt"])
            full = len(ids) // block_size * block_size
            if full:
                seq[0] += 1
                hashes = [seq[0] * 1000 + k for k in range(full // block_size)]
                pubs[i].publish([BlockStored(hashes, None, ids[:full], block_size)])
            await asyncio.sleep(service_ms / 1e3)
        finally:
            inflight[i] -= 1
        return web.json_response({"id": "c", "object": "text_completion", "model": "m",
                                  "choices": [{"index": 0, "text": "x", "finish_reason": "length"}],
                                  "usage": {"prompt_tokens": len(ids), "completion_tokens": 1,
                                            "total_tokens": len(ids) + 1}})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/health", health)
    app.router.add_get("/scrapes", scrape_count)
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/completions", completions)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    out = []
    for i in range(n):
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]  # noqa: SLF001
        by_port[port] = i
        out.append(f"http://127.0.0.1:{port}#kv={pubs[i].connect_endpoint}")
    print(json.dumps(out), flush=True)
    await asyncio.Event().wait()


# --- the load generator --------------------------------------------------------------------------------------------

def _router_metrics(text: str) -> dict:
    buckets: list[tuple[float, float]] = []
    kv_msgs = kv_blocks = 0.0
    for ln in text.splitlines():
        if ln.startswith("llmd_router_scheduling_seconds_bucket"):
            le = ln.split('le="', 1)[1].split('"', 1)[0]
            buckets.append((float(le), float(ln.rsplit(" ", 1)[1])))
        elif ln.startswith("llmd_router_kv_events_messages_total"):
            kv_msgs += float(ln.rsplit(" ", 1)[1])
        elif ln.startswith("llmd_router_kv_events_blocks_total"):
            kv_blocks += float(ln.rsplit(" ", 1)[1])
    return {"buckets": buckets, "kv_messages": kv_msgs, "kv_blocks": kv_blocks}


def _bucket_quantile(before: list, after: list, q: float) -> float | None:
    diff = [(le, b - a) for (le, b), (_, a) in zip(after, before, strict=True)]
    total = diff[-1][1] if diff else 0
    if not total:
        return None
    for le, c in diff:
        if c >= q * total:
            return le
    return None


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def one_run(a: argparse.Namespace, n: int) -> dict:
    rng = random.Random(a.seed)
    with ExitStack() as stack:
        fl = subprocess.Popen([PY, __file__, "--fleet", str(n), "--service-ms", str(a.service_ms)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        stack.callback(lambda: (fl.terminate(), fl.wait(10)))
        specs = json.loads(fl.stdout.readline())  # type: ignore[union-attr]
        urls = [s.split("#", 1)[0] for s in specs]
        rport = free_port()
        router = spawn([PY, "-m", "llmd_kserve.cli", "router", "--host", "127.0.0.1", "--port", str(rport),
                        "--config", a.config, "--endpoints", ",".join(specs)], stack)
        rurl = f"http://127.0.0.1:{rport}"
        prefixes = [" ".join(f"p{rng.randrange(10**5)}" for _ in range(11)) for _ in range(256)]
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                         timeout=aiohttp.ClientTimeout(total=60)) as s:
            await wait_ready(s, rurl, router, timeout=120)

            async def get(url: str) -> bytes:
                async with s.get(url) as r:
                    return await r.read()

            async def scrapes() -> int:
                return json.loads(await get(urls[0] + "/scrapes"))["scrapes"]

            lat: list[float] = []
            errors = 0

            async def one(prompt: str) -> None:
                nonlocal errors
                t0 = time.perf_counter()
                try:
                    async with s.post(f"{rurl}/v1/completions", json={"model": "m", "prompt": prompt,
                                                                      "max_tokens": 1}) as r:
                        await r.read()
                        if r.status != 200:
                            errors += 1
                            return
                except (aiohttp.ClientError, TimeoutError):
                    errors += 1
                    return
                lat.append(time.perf_counter() - t0)

            async def load(seconds: float) -> float:
                tasks, t0 = [], time.perf_counter()
                next_at = t0
                while next_at - t0 < seconds:
                    prompt = f"{rng.choice(prefixes)} q{rng.randrange(10**6)} r{rng.randrange(10**6)}"
                    tasks.append(asyncio.create_task(one(prompt)))
                    next_at += rng.expovariate(a.rate)
                    delay = next_at - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                sent = time.perf_counter() - t0
                await asyncio.gather(*tasks)
                return len(tasks) / sent

            await load(2.0)  # warm-up
            lat.clear()
            errors = 0
            m0, sc0, c0, t0 = _router_metrics((await get(rurl + "/metrics")).decode()), await scrapes(), \
                cpu_seconds(router.pid), time.perf_counter()
            offered = await load(a.seconds)
            dt = time.perf_counter() - t0
            m1, sc1, c1 = _router_metrics((await get(rurl + "/metrics")).decode()), await scrapes(), \
                cpu_seconds(router.pid)
            index_keys = json.loads(await get(rurl + "/debug/endpoints"))["index_keys"]
            rss = _rss_mb(router.pid)
            await asyncio.sleep(3.0)  # idle: the scraper slows down
            sc2, c2, t2 = await scrapes(), cpu_seconds(router.pid), time.perf_counter()
            await asyncio.sleep(a.idle_seconds)
            sc3, c3, t3 = await scrapes(), cpu_seconds(router.pid), time.perf_counter()
    return {
        "endpoints": n, "offered_req_s": offered, "completed_req_s": len(lat) / dt, "errors": errors,
        "latency_p50_ms": pct(lat, 50) * 1e3 if lat else None, "latency_p99_ms": pct(lat, 99) * 1e3 if lat else None,
        "router_core_pct": (c1 - c0) / dt * 100, "router_cpu_ms_per_req": (c1 - c0) / max(len(lat), 1) * 1e3,
        "router_rss_mb": rss,
        "decision_p50_ms_le": (_bucket_quantile(m0["buckets"], m1["buckets"], 0.5) or 0) * 1e3,
        "decision_p99_ms_le": (_bucket_quantile(m0["buckets"], m1["buckets"], 0.99) or 0) * 1e3,
        "kv_index_keys": index_keys, "kv_messages_per_s": (m1["kv_messages"] - m0["kv_messages"]) / dt,
        "kv_blocks_per_s": (m1["kv_blocks"] - m0["kv_blocks"]) / dt,
        "scrapes_per_s_loaded": (sc1 - sc0) / dt, "scrapes_per_s_idle": (sc3 - sc2) / (t3 - t2),
        "router_core_pct_idle": (c3 - c2) / (t3 - t2) * 100,
    }


async def main(a: argparse.Namespace) -> dict:
    runs = []
    for n in a.endpoints:
        runs.append(await one_run(a, n))
        print(json.dumps(runs[-1]), flush=True)
    return {"workload": {"rate": a.rate, "seconds": a.seconds, "service_ms": a.service_ms, "config": a.config,
                         "prompt": "~60 tokens, 256 shared 33-token prefixes", "machine": f"{os.cpu_count()}-core CPU"},
            "runs": runs}


def cli() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--fleet", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--endpoints", type=int, nargs="+", default=[64, 128])
    p.add_argument("--rate", type=float, default=1000.0)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--idle-seconds", type=float, default=10.0)
    p.add_argument("--service-ms", type=float, default=5.0)
    p.add_argument("--config", default="precise-prefix")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    if a.fleet:
        aio_run(fleet(a.fleet, a.service_ms, 16))
        return
    print(json.dumps(aio_run(main(a)), indent=2))


if __name__ == "__main__":
    cli()
