"""User-space instructions per small request of a router, under valgrind's callgrind (load-independent).

One simulated engine; the router (ours from ``--src``, or vllm-router with ``--vllm-router``) runs under
``valgrind --tool=callgrind --instr-atstart=no``; after ``--warmup`` requests instrumentation is switched on for
``--requests`` more (closed loop over ``--conns`` keep-alive connections: distinct 5-word prompts, ``max_tokens`` 1,
or 8 streamed tokens with ``--stream``), then off, and the dump's total is divided by ``--requests``. Our router
polls metrics every 5 s so that periodic scrapes do not grow with the run's wall time.

    python benchmarks/router_callgrind.py --src .                       # our router from this tree
    python benchmarks/router_callgrind.py --vllm-router "$(which vllm-router)"
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from router_overhead import free_port, wait_ready  # noqa: E402

PY = sys.executable


def _spawn(argv: list[str], stack: ExitStack, env: dict[str, str], cwd: str) -> subprocess.Popen:
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=cwd)

    def stop() -> None:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()

    stack.callback(stop)
    return proc


async def _load(s: aiohttp.ClientSession, url: str, n: int, conns: int, stream: bool) -> None:
    rng = random.Random(1)
    bodies = [json.dumps({"model": "m", "prompt": " ".join(f"w{rng.randrange(10**5)}" for _ in range(5)),
                          "max_tokens": 8 if stream else 1, "stream": stream, "ignore_eos": True}).encode()
              for _ in range(256)]
    left = n

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            async with s.post(f"{url}/v1/completions", data=bodies[left % len(bodies)],
                              headers={"Content-Type": "application/json"}) as r:
                await r.read()
                if r.status != 200:
                    raise RuntimeError(f"HTTP {r.status}")

    await asyncio.gather(*(worker() for _ in range(conns)))


def _callgrind(pid: int, *args: str) -> None:
    subprocess.run(["callgrind_control", *args, str(pid)], check=True, capture_output=True)


async def main(a: argparse.Namespace, out: Path) -> float:
    src = str(Path(a.src).resolve())
    env = {**os.environ, "PYTHONPATH": src}
    with ExitStack() as stack:
        port, kv, rport = free_port(), free_port(), free_port()
        engine = _spawn([PY, "-m", "llmd_kserve.cli", "engine", "--host", "127.0.0.1", "--port", str(port),
                         "--time-scale", "1.0", "--kv-events-endpoint", f"tcp://127.0.0.1:{kv}", "--model", "m"],
                        stack, env, src)
        if a.vllm_router:
            router = [a.vllm_router, "--policy", "round_robin", "--log-level", "warning", "--worker-urls",
                      f"http://127.0.0.1:{port}", "--host", "127.0.0.1", "--port", str(rport),
                      "--prometheus-host", "127.0.0.1", "--prometheus-port", str(free_port())]
        else:
            router = [PY, "-m", "llmd_kserve.cli", "router", "--host", "127.0.0.1", "--port", str(rport),
                      "--config", a.config, "--scrape-interval", "5",
                      "--endpoints", f"http://127.0.0.1:{port}#kv=tcp://127.0.0.1:{kv}", *a.router_args]
        proc = _spawn(["valgrind", "--tool=callgrind", "--instr-atstart=no",
                       f"--callgrind-out-file={out}/callgrind.out.%p", *router], stack, env, src)
        url = f"http://127.0.0.1:{rport}"
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=a.conns)) as s:
            await wait_ready(s, f"http://127.0.0.1:{port}", engine)
            await wait_ready(s, url, proc, timeout=300)
            await _load(s, url, a.warmup, a.conns, a.stream)
            _callgrind(proc.pid, "-i", "on")
            await _load(s, url, a.requests, a.conns, a.stream)
            _callgrind(proc.pid, "-i", "off")
            _callgrind(proc.pid, "-d")
    total = 0
    for f in out.glob("callgrind.out.*"):
        for line in f.read_text(errors="replace").splitlines():
            if line.startswith("totals:"):
                total += int(line.split()[1])
                break
    return total / a.requests


def cli() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--src", default=".", help="source tree of our router (and of the engine)")
    p.add_argument("--vllm-router", default="", help="measure this vllm-router binary instead of our router")
    p.add_argument("--config", default="default")
    p.add_argument("--requests", type=int, default=600)
    p.add_argument("--warmup", type=int, default=300)
    p.add_argument("--conns", type=int, default=64)
    p.add_argument("--stream", action="store_true", help="8 streamed tokens per request instead of 1 whole")
    p.add_argument("--router-args", nargs=argparse.REMAINDER, default=[], help="extra `llmd-kserve router` flags")
    a = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="router-callgrind-") as tmp:
        per_request = asyncio.run(main(a, Path(tmp)))
    print(json.dumps({"router": "vllm-router" if a.vllm_router else f"llmd-kserve ({a.src})",
                      "stream": a.stream, "requests": a.requests, "instructions_per_request": round(per_request)}))


if __name__ == "__main__":
    cli()
