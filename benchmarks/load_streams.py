"""The fault report's load run, repeated: N concurrent streams through ``llmd-kserve up --engines 4``.

Every request is in flight at once (aiohttp client, one connection each), ``max_tokens`` 32 with ``ignore_eos``,
prompts from 16 shared 1.2k-character prefixes plus a question. Reports ok / errors / timeouts, TTFT p50/p99 and the
router's RSS and open fds before and after, and the router's CPU seconds for the run. ``--soft-nofile 1024`` starts the stack with that soft fd limit (the
M3 condition: the router now raises it to the hard limit itself).

    PYTHONPATH=. .venv/bin/python benchmarks/load_streams.py [--streams 1000] [--soft-nofile 1024]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

from llmd_kserve.bench.stats import percentile


def _router_pid(up_pid: int) -> int:
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
                cmd = (d / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if ppid == up_pid and b"router" in cmd:
                return int(d.name)
    raise RuntimeError("no router child")


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds the process has used (robust to a shared machine, unlike latency)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def _one(s: aiohttp.ClientSession, url: str, prompt: str, max_tokens: int, timeout: float) -> tuple[str, float]:
    t0 = time.perf_counter()
    ttft = -1.0
    body = {"prompt": prompt, "max_tokens": max_tokens, "ignore_eos": True, "stream": True}
    try:
        async with s.post(url, json=body, timeout=aiohttp.ClientTimeout(total=timeout)) as r:
            if r.status != 200:
                return f"http_{r.status}", ttft
            error = False
            async for line in r.content:
                if line.startswith(b"data: {") and ttft < 0:
                    ttft = time.perf_counter() - t0
                error |= line.startswith(b'data: {"error"')
            return ("stream_error" if error else "ok"), ttft
    except TimeoutError:
        return "timeout", ttft
    except aiohttp.ClientError as exc:
        return type(exc).__name__, ttft


async def _load(base: str, n: int, max_tokens: int, timeout: float, seed: int) -> tuple[dict, list[float], float]:
    rng = random.Random(seed)
    prefixes = [" ".join(f"w{rng.randrange(5000)}" for _ in range(200))[:1200] for _ in range(16)]
    prompts = [f"{prefixes[i % 16]} question {i} {rng.random()}" for i in range(n)]
    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn) as s:
        t0 = time.perf_counter()
        res = await asyncio.gather(*(_one(s, base + "/v1/completions", p, max_tokens, timeout) for p in prompts))
        wall = time.perf_counter() - t0
    outcomes: dict[str, int] = {}
    for what, _ in res:
        outcomes[what] = outcomes.get(what, 0) + 1
    return outcomes, sorted(t for w, t in res if w == "ok"), wall


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--streams", type=int, default=1000)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--engines", type=int, default=4)
    ap.add_argument("--soft-nofile", type=int, default=None, help="start the stack with this soft fd limit")
    ap.add_argument("--timeout", type=float, default=300.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--log-dir", default=None, help="keep the stack's logs here")
    a = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the client needs a socket per stream

    def limit() -> None:
        if a.soft_nofile:
            resource.setrlimit(resource.RLIMIT_NOFILE, (a.soft_nofile, hard))

    up = subprocess.Popen([sys.executable, "-m", "llmd_kserve.cli", "up", "--engines", str(a.engines), "--port", "0",
                           "--no-prometheus", *(["--log-dir", a.log_dir] if a.log_dir else [])], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          preexec_fn=limit)
    try:
        base = ""
        for line in up.stdout:  # type: ignore[union-attr]
            m = re.search(r"OpenAI endpoint: (http://\S+)/v1", line)
            base = m.group(1) if m else base
            if "Ctrl-C stops everything" in line:
                break
        if not base:
            raise RuntimeError("up did not start")
        pid = _router_pid(up.pid)
        limits = next(ln for ln in Path(f"/proc/{pid}/limits").read_text().splitlines() if ln.startswith("Max open"))
        before = (_rss_mb(pid), _fds(pid), _cpu_s(pid))
        outcomes, ttft, wall = asyncio.run(_load(base, a.streams, a.max_tokens, a.timeout, a.seed))
        after = (_rss_mb(pid), _fds(pid), _cpu_s(pid))
    finally:
        up.terminate()
        up.wait(60)

    def q(p: float) -> float | None:
        v = percentile(ttft, p * 100)
        return None if v is None else round(v, 3)

    print(json.dumps({"streams": a.streams, "max_tokens": a.max_tokens, "engines": a.engines,
                      "router_nofile_soft_hard": limits.split()[3:5], "outcomes": outcomes,
                      "ttft_p50_s": q(0.5), "ttft_p99_s": q(0.99), "ttft_mean_s": round(statistics.fmean(ttft), 3)
                      if ttft else None, "wall_s": round(wall, 2),
                      "router_rss_mb": [round(before[0], 1), round(after[0], 1)],
                      "router_fds": [before[1], after[1]],
                      "router_cpu_s": round(after[2] - before[2], 2)}, indent=1))
    return 0 if outcomes.get("ok") == a.streams else 1


if __name__ == "__main__":
    sys.exit(main())
