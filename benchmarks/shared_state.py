"""Governance state shared in Redis (``--state-url``), measured against the in-memory default in one run.

``replicas``: one simulated engine (``llmd-kserve engine``), a local ``redis-server``, and two ``llmd-kserve router``
processes holding one tenant's key with an RPM limit. Open-loop clients send ``--rate`` requests per second (seeded
Poisson arrivals, alternating between the routers) for ``--seconds``; the key may be admitted its full bucket
(``rpm``) plus ``rpm/60`` per second elapsed. Run twice: routers in memory (each replica allows the whole limit)
and routers sharing Redis. Then the same load for a third of the time on a second key of the tenant that
has a token budget (``--budget``): the tokens billed (the answers' ``usage``) against the budget.

``cost``: the limiter alone, in this process: ``--ops`` admit + settle pairs on a key with an RPM, a TPM and a
token budget, in memory and through Redis (Lua scripts, one round trip each); CPU microseconds per pair (this
process, and the redis-server's own from /proc) and the wall time per pair (p50, p99).

    PYTHONPATH=. .venv/bin/python benchmarks/shared_state.py replicas --rpm 600 --rate 30 --seconds 30
    PYTHONPATH=. .venv/bin/python benchmarks/shared_state.py cost --ops 5000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from llmd_kserve.bench.stats import percentile
from llmd_kserve.governance.keys import VirtualKey, add_key
from llmd_kserve.governance.limits import RateLimiter
from llmd_kserve.governance.shared_state import SharedLimiter
from llmd_kserve.stack.procs import free_port
from llmd_kserve.stack.redis import redis_answers, redis_argv
from llmd_kserve.state_store import StateStore

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "llmd_kserve.cli", *args]


def _spawn(cmd: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})


def start_redis(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    proc = subprocess.Popen(redis_argv(workdir, port), stdout=subprocess.DEVNULL)
    for _ in range(200):
        if redis_answers(url):
            return proc, url
        time.sleep(0.05)
    raise RuntimeError("redis-server did not start")


async def _wait(s: aiohttp.ClientSession, url: str) -> None:
    for _ in range(600):
        try:
            async with s.get(url) as r:
                if r.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.05)
    raise RuntimeError(f"{url} did not come up")


async def _load(urls: list[str], key: str, rate: float, seconds: float,
                seed: int) -> tuple[int, int, int, float, int]:
    """(admitted, refused, other, elapsed s, tokens billed): open-loop Poisson arrivals alternating between ``urls``."""
    rng, counts = random.Random(seed), {"ok": 0, "429": 0, "other": 0, "tokens": 0}
    body = {"model": "sim-model", "prompt": "hello there", "max_tokens": 4}
    hdrs = {"Authorization": f"Bearer {key}"}

    async def one(s: aiohttp.ClientSession, url: str) -> None:
        try:
            async with s.post(url + "/v1/completions", json=body, headers=hdrs) as r:
                answer = await r.json(content_type=None)
                counts["ok" if r.status == 200 else "429" if r.status == 429 else "other"] += 1
                if r.status == 200:
                    counts["tokens"] += answer["usage"]["total_tokens"]
        except aiohttp.ClientError:
            counts["other"] += 1

    async with aiohttp.ClientSession() as s:
        tasks, t0, at, i = [], time.monotonic(), 0.0, 0
        while at < seconds:
            delay = t0 + at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(s, urls[i % len(urls)])))
            i += 1
            at += rng.expovariate(rate)
        await asyncio.gather(*tasks)
        return counts["ok"], counts["429"], counts["other"], time.monotonic() - t0, counts["tokens"]


async def replicas(a: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="shared-state-"))
    redis_proc, state_url = start_redis(work)
    eport = free_port()
    engine = _spawn(_cli("engine", "--port", str(eport), "--model", "sim-model", "--time-scale", "0.05"))
    procs = [redis_proc, engine]
    try:
        async with aiohttp.ClientSession() as s:
            await _wait(s, f"http://127.0.0.1:{eport}/v1/models")
            for mode in ("memory", "redis"):
                keys = work / f"keys-{mode}.yaml"
                key, _ = add_key(keys, tenant="acme", models=("sim-model",), rpm=a.rpm)
                budget_key, _ = add_key(keys, tenant="acme", models=("sim-model",), token_budget=a.budget)
                ports = [free_port(), free_port()]
                extra = ["--state-url", state_url] if mode == "redis" else []
                routers = [_spawn(_cli("router", "--port", str(p), "--endpoints", f"http://127.0.0.1:{eport}",
                                       "--served-model", "sim-model", "--keys-file", str(keys), *extra))
                           for p in ports]
                procs += routers
                urls = [f"http://127.0.0.1:{p}" for p in ports]
                for u in urls:
                    await _wait(s, u + "/health")
                ok, refused, other, elapsed, _ = await _load(urls, key, a.rate, a.seconds, a.seed)
                allowed = a.rpm + a.rpm * elapsed / 60
                print(f"{mode:6s} 2 routers rpm={a.rpm} sent={ok + refused + other} at {a.rate}/s for "
                      f"{elapsed:.1f}s: admitted={ok} allowed={allowed:.1f} admitted/allowed={ok / allowed:.3f} "
                      f"refused={refused} other={other}", flush=True)
                ok, refused, other, elapsed, tokens = await _load(urls, budget_key, a.rate, a.seconds / 3, a.seed)
                print(f"{mode:6s} 2 routers token_budget={a.budget} sent={ok + refused + other}: admitted={ok} "
                      f"tokens billed={tokens} billed/budget={tokens / a.budget:.3f} refused={refused} "
                      f"other={other}", flush=True)
                for r in routers:
                    r.terminate()
                    r.wait(30)
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                p.wait(30)
    print(f"load average: {os.getloadavg()}")


def _proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def cost(a: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="shared-state-"))
    redis_proc, state_url = start_redis(work)
    key = VirtualKey("bench", tenant="acme", rpm=10**9, tpm=10**12, token_budget=10**15)
    try:
        shared = SharedLimiter(StateStore(state_url))
        memory = RateLimiter()
        for name in ("memory", "redis", "memory", "redis"):  # twice each, interleaved: the second pass is reported
            walls: list[float] = []
            cpu0, srv0 = time.process_time(), _proc_cpu_s(redis_proc.pid)
            for _ in range(a.ops):
                t = time.perf_counter()
                if name == "memory":
                    memory.settle(key, memory.admit(key, 100), 60)
                else:
                    await shared.settle(key, await shared.admit(key, 100), 60)
                walls.append(time.perf_counter() - t)
            cpu, srv = time.process_time() - cpu0, _proc_cpu_s(redis_proc.pid) - srv0
            p50, p99 = percentile(walls, 50) or 0.0, percentile(walls, 99) or 0.0
            print(f"{name:6s} admit+settle x{a.ops}: client CPU {cpu / a.ops * 1e6:.1f} us, redis-server CPU "
                  f"{srv / a.ops * 1e6:.1f} us, wall p50 {p50 * 1e6:.1f} us p99 {p99 * 1e6:.1f} us", flush=True)
        await shared.close()
    finally:
        redis_proc.terminate()
        redis_proc.wait(30)
    print(f"load average: {os.getloadavg()}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("replicas")
    r.add_argument("--rpm", type=int, default=600)
    r.add_argument("--rate", type=float, default=30.0)
    r.add_argument("--seconds", type=float, default=30.0)
    r.add_argument("--budget", type=int, default=600, help="token budget of a second key of the tenant")
    r.add_argument("--seed", type=int, default=1)
    c = sub.add_parser("cost")
    c.add_argument("--ops", type=int, default=5000)
    a = p.parse_args()
    asyncio.run(replicas(a) if a.cmd == "replicas" else cost(a))


if __name__ == "__main__":
    main()
