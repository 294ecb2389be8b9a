"""How many concurrent streams one simulated engine process serves at --time-scale 1 with ITL within 10% of the model.

    python benchmarks/engine_capacity.py [--concurrency 64,128,256,384,512] [--max-tokens 128] [--prompt-len 512]

The engine runs in its own process (``llmd-kserve engine``); this process is the load: C streaming clients (aiohttp)
each send one request at once (random ``prompt-len``-token prompt, ``max-tokens`` outputs, ``ignore_eos``), like the
calibration's decode scenario. For each C it reports the mean inter-token latency the clients measured (all token
gaps of all requests) against the model's: the engine's own ``vllm:inter_token_latency_seconds`` (sum/count over
the run), which records the step model's token times, i.e. what the clients would see with a perfectly punctual
server. Their difference is what the real-time driver, HTTP and SSE add. Also: the CPU used by the engine and
client processes (fraction of one core) and output tokens/s.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import subprocess
import sys
import time

import aiohttp


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def itl_hist(session: aiohttp.ClientSession, url: str) -> tuple[float, float]:
    async with session.get(url + "/metrics") as r:
        text = await r.text()
    vals = {}
    for line in text.splitlines():
        for k in ("sum", "count"):
            if line.startswith(f"vllm:inter_token_latency_seconds_{k}"):
                vals[k] = float(line.rsplit(" ", 1)[1])
    return vals["sum"], vals["count"]


async def one(session: aiohttp.ClientSession, url: str, prompt: list[int], max_tokens: int) -> tuple[float, float]:
    body = {"prompt": prompt, "max_tokens": max_tokens, "ignore_eos": True, "stream": True}
    t0 = time.perf_counter()
    stamps: list[float] = []
    async with session.post(url + "/v1/completions", json=body) as r:
        assert r.status == 200, await r.text()
        async for line in r.content:
            if line.startswith(b"data: ") and not line.startswith(b"data: [DONE]"):
                stamps.append(time.perf_counter())
    return stamps[0] - t0, stamps[-1] - stamps[0], len(stamps) - 1


async def run_level(url: str, pid: int, c: int, prompt_len: int, max_tokens: int, rng: random.Random) -> dict:
    prompts = [[rng.randrange(10, 32000) for _ in range(prompt_len)] for _ in range(c)]
    conn = aiohttp.TCPConnector(limit=c)
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=600)) as s:
        h0 = await itl_hist(s, url)
        e0, c0, t0 = cpu_seconds(pid), time.process_time(), time.perf_counter()
        res = await asyncio.gather(*(one(s, url, p, max_tokens) for p in prompts))
        wall = time.perf_counter() - t0
        e1, c1 = cpu_seconds(pid), time.process_time()
        h1 = await itl_hist(s, url)
    measured = sum(x[1] for x in res) / sum(x[2] for x in res)
    model = (h1[0] - h0[0]) / (h1[1] - h0[1])
    return {"c": c, "model_ms": model * 1e3, "measured_ms": measured * 1e3, "err": measured / model - 1,
            "engine_cpu": (e1 - e0) / wall, "client_cpu": (c1 - c0) / wall, "tok_s": c * max_tokens / wall}


async def main_async(a: argparse.Namespace) -> None:
    port = a.port
    proc = subprocess.Popen([sys.executable, "-m", "llmd_kserve.cli", "engine", "--host", "127.0.0.1",
                             "--port", str(port), "--time-scale", "1", "--profile", a.profile],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "engine ready" in line, line
        url = f"http://127.0.0.1:{port}"
        rng = random.Random(1)
        await run_level(url, proc.pid, 4, a.prompt_len, 16, rng)  # warm-up
        print(f"{'streams':>8} {'model ITL ms':>13} {'measured ms':>12} {'error':>7} {'engine CPU':>11} "
              f"{'client CPU':>11} {'out tok/s':>10}", flush=True)
        for c in a.concurrency:
            r = await run_level(url, proc.pid, c, a.prompt_len, a.max_tokens, rng)
            ok = "ok" if abs(r["err"]) <= 0.10 else "OVER 10%"
            print(f"{r['c']:>8} {r['model_ms']:>13.2f} {r['measured_ms']:>12.2f} {r['err']:>+7.1%} "
                  f"{r['engine_cpu']:>10.0%} {r['client_cpu']:>10.0%} {r['tok_s']:>10.0f}  {ok}", flush=True)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--concurrency", default="64,128,256,384,512,768,1024")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--prompt-len", type=int, default=512)
    ap.add_argument("--profile", default="h100-llama8b")
    ap.add_argument("--port", type=int, default=18765)
    a = ap.parse_args()
    a.concurrency = [int(x) for x in a.concurrency.split(",")]
    asyncio.run(main_async(a))


if __name__ == "__main__":
    main()
