"""Benchmark (c): the router's overhead against calling a simulated engine directly, side by side in one run.

Processes: simulated engine(s) (``llmd-kserve engine``), the router (``llmd-kserve router``), and this script as the
load generator (uvloop + aiohttp), each its own process. Rounds alternate direct / via-router so drift hits both:

1. streaming: ``--streams`` concurrent streaming completions (closed loop, 32..160 output tokens) for
   ``--stream-seconds``; client-side TTFT p50/p90 per target,
   and the added TTFT (router minus direct) per round and pooled;
2. non-streaming: small completions (``max_tokens=1``) from ``--conns`` concurrent connections for ``--seconds``;
   requests/s per target.

    .venv/bin/python benchmarks/router_overhead.py [--config precise-prefix] [--engines 1] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import time
from contextlib import ExitStack

import aiohttp

from llmd_kserve.aio import run as aio_run
from llmd_kserve.bench.stats import percentile
from llmd_kserve.stack.procs import free_port

PY = sys.executable


def spawn(args: list[str], stack: ExitStack) -> subprocess.Popen:
    proc = subprocess.Popen([PY, "-m", "llmd_kserve.cli", *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def _stop() -> None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()

    stack.callback(_stop)
    return proc


async def wait_ready(session: aiohttp.ClientSession, url: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url} exited: {proc.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
        try:
            async with session.get(f"{url}/health") as r:
                if r.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} not ready after {timeout}s")


def prompt(rng: random.Random, words: int) -> str:
    return " ".join(f"w{rng.randrange(100000)}" for _ in range(words))


async def stream_one(session: aiohttp.ClientSession, url: str, body: dict) -> float:
    t0 = time.perf_counter()
    ttft = None
    async with session.post(f"{url}/v1/completions", json=body) as r:
        if r.status != 200:
            raise RuntimeError(f"HTTP {r.status}: {await r.text()}")
        async for chunk in r.content.iter_any():
            if ttft is None and b'"text"' in chunk:
                ttft = time.perf_counter() - t0
    assert ttft is not None
    return ttft


async def streaming_round(session, urls: list[str], n_streams: int, seconds: float, model: str, rng,
                          warmup: float = 1.0) -> list[float]:
    """``n_streams`` closed-loop streams for ``seconds``; TTFTs of requests started after ``warmup``. Output lengths
    are drawn from 32..160 tokens so the streams do not move in lock-step."""
    ttfts: list[float] = []
    t_start = time.perf_counter()
    stop_at = t_start + seconds

    async def worker(w: int) -> None:
        i = w
        while time.perf_counter() < stop_at:
            body = {"model": model, "prompt": prompt(rng, 24), "max_tokens": rng.randint(32, 160), "stream": True,
                    "ignore_eos": True}
            started = time.perf_counter()
            ttft = await stream_one(session, urls[i % len(urls)], body)
            if started - t_start >= warmup:
                ttfts.append(ttft)
            i += 1

    await asyncio.gather(*(worker(w) for w in range(n_streams)))
    return ttfts


async def throughput_round(session, urls: list[str], conns: int, seconds: float, model: str) -> float:
    body = json.dumps({"model": model, "prompt": "hello world, a small request", "max_tokens": 1}).encode()
    headers = {"Content-Type": "application/json"}
    done = 0
    stop_at = time.perf_counter() + seconds

    async def worker(w: int) -> None:
        nonlocal done
        i = w
        while time.perf_counter() < stop_at:
            async with session.post(f"{urls[i % len(urls)]}/v1/completions", data=body, headers=headers) as r:
                await r.read()
                if r.status != 200:
                    raise RuntimeError(f"HTTP {r.status}")
            done += 1
            i += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(conns)))
    return done / (time.perf_counter() - t0)


async def main(a: argparse.Namespace) -> dict:
    rng = random.Random(a.seed)
    with ExitStack() as stack:
        engine_urls, endpoint_specs, procs = [], [], []
        for _ in range(a.engines):
            port, kv = free_port(), free_port()
            procs.append(spawn(["engine", "--host", "127.0.0.1", "--port", str(port), "--time-scale", str(a.time_scale),
                                "--kv-events-endpoint", f"tcp://127.0.0.1:{kv}", "--model", a.model], stack))
            engine_urls.append(f"http://127.0.0.1:{port}")
            endpoint_specs.append(f"http://127.0.0.1:{port}#kv=tcp://127.0.0.1:{kv}")
        rport = free_port()
        router = spawn(["router", "--host", "127.0.0.1", "--port", str(rport), "--config", a.config,
                        "--endpoints", ",".join(endpoint_specs)], stack)
        router_url = f"http://127.0.0.1:{rport}"
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120)) as s:
            for url, proc in zip(engine_urls, procs, strict=True):
                await wait_ready(s, url, proc)
            await wait_ready(s, router_url, router)
            targets = {"direct": engine_urls, "router": [router_url]}
            for urls in targets.values():  # warm-up: connections, caches, JITs
                await streaming_round(s, urls, a.streams, 2.0, a.model, rng)
                await throughput_round(s, urls, a.conns, 1.0, a.model)
            ttft: dict[str, list[float]] = {k: [] for k in targets}
            deltas, rps = [], {k: [] for k in targets}
            n_streamed = dict.fromkeys(targets, 0)
            for r in range(a.rounds):
                order = list(targets) if r % 2 == 0 else list(reversed(targets))
                p50 = {}
                for name in order:
                    t = await streaming_round(s, targets[name], a.streams, a.stream_seconds, a.model, rng)
                    ttft[name] += t
                    p50[name] = percentile(t, 50)
                    n_streamed[name] += len(t)
                deltas.append(p50["router"] - p50["direct"])
                for name in order:
                    rps[name].append(await throughput_round(s, targets[name], a.conns, a.seconds, a.model))
                print(f"round {r}: TTFT p50 direct {p50['direct'] * 1e3:.2f} ms, router {p50['router'] * 1e3:.2f} ms"
                      f" (+{deltas[-1] * 1e3:.2f} ms); req/s direct {rps['direct'][-1]:.0f}, "
                      f"router {rps['router'][-1]:.0f}", flush=True)
    out = {
        "workload": {"engines": a.engines, "time_scale": a.time_scale, "config": a.config, "streams": a.streams,
                     "stream_seconds_per_round": a.stream_seconds, "stream_max_tokens": "32..160", "rounds": a.rounds, "conns": a.conns, "seconds": a.seconds,
                     "prompt_words": 24, "machine": f"{os.cpu_count()}-core CPU sandbox"},
        "streamed_requests_measured": n_streamed,
        "added_ttft_p50_ms_per_round": [d * 1e3 for d in deltas],
        "ttft_p50_ms": {k: percentile(v, 50) * 1e3 for k, v in ttft.items()},
        "ttft_p90_ms": {k: percentile(v, 90) * 1e3 for k, v in ttft.items()},
        "added_ttft_p50_ms_median_of_rounds": statistics.median(deltas) * 1e3,
        "added_ttft_p50_ms_pooled": (percentile(ttft["router"], 50) - percentile(ttft["direct"], 50)) * 1e3,
        "req_per_s": {k: statistics.median(v) for k, v in rps.items()},
    }
    return out


def cli() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--engines", type=int, default=1)
    p.add_argument("--time-scale", type=float, default=1.0, help="engine speed: 1.0 = H100 timing, <1 faster")
    p.add_argument("--config", default="precise-prefix")
    p.add_argument("--model", default="llama-8b-shape")
    p.add_argument("--streams", type=int, default=64)
    p.add_argument("--stream-seconds", type=float, default=8.0, help="streaming seconds per target per round")
    p.add_argument("--conns", type=int, default=128, help="connections for the non-streaming throughput part")
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    result = aio_run(main(a))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    cli()
