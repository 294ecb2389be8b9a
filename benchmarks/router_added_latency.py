"""Added latency of a router at 64 connections, measured below CPU saturation: direct vs via each router, one run.

Processes: ``--engines`` simulated engines, our router (``llmd-kserve router``), ``vllm-router`` (and with
``--baseline-src`` our router from an older tree) in front of the same engines, and this script as the load
generator. ``--conns`` workers, each a closed loop with exponential think time, so that all of them together send
``--rate`` req/s (at most ``--conns`` in flight, usually a few): the machine stays far from saturated and what a
router adds is its own work per request, not CPU queueing. Each request is a small non-streaming completion
(``max_tokens=1``, distinct 5-word prompts) sent to a target drawn at random per request - direct (the engines,
round-robin) or one of the routers - so that all targets share the same moments of background load (other jobs on a
shared machine) instead of each having its own phase. Per round of ``--seconds``: latency p50/p90 per target, the
added p50/p90 (router minus direct), the CPU % of a core of each router and of the whole machine (``/proc/stat``)
and the load average.

    PYTHONPATH=. .venv/bin/python benchmarks/router_added_latency.py [--rounds 6] [--rate 200] [--conns 64]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import statistics
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from router_overhead import free_port, pct, wait_ready  # noqa: E402
from router_vs_vllm_router import PY, _engines, cpu_seconds, spawn  # noqa: E402

from llmd_kserve.aio import run as aio_run  # noqa: E402


def machine_busy_s() -> float:
    """Non-idle CPU seconds of the whole machine so far (all cores)."""
    f = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    ticks = [int(x) for x in f]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


async def mixed_phase(s: aiohttp.ClientSession, targets: dict[str, list[str]], conns: int, rate: float,
                      seconds: float, model: str, seed: int) -> dict[str, dict]:
    rng = random.Random(seed)
    bodies = [json.dumps({"model": model, "prompt": " ".join(f"w{rng.randrange(10**5)}" for _ in range(5)),
                          "max_tokens": 1}).encode() for _ in range(256)]
    headers = {"Content-Type": "application/json"}
    names = list(targets)
    lat: dict[str, list[float]] = {n: [] for n in names}
    errors = dict.fromkeys(names, 0)
    think = conns / rate  # mean think time per worker: conns workers together send ~rate req/s
    stop_at = time.perf_counter() + seconds

    async def worker(w: int) -> None:
        wr = random.Random(seed * 1000 + w)
        await asyncio.sleep(wr.uniform(0, think))  # spread the start
        i = w
        while time.perf_counter() < stop_at:
            i += 1
            name = wr.choice(names)
            url = targets[name][i % len(targets[name])]
            t0 = time.perf_counter()
            try:
                async with s.post(f"{url}/v1/completions", data=bodies[i % len(bodies)], headers=headers) as r:
                    await r.read()
                    if r.status != 200:
                        raise RuntimeError(f"HTTP {r.status} from {url}")
                lat[name].append(time.perf_counter() - t0)
            except aiohttp.ClientError:
                errors[name] += 1
            await asyncio.sleep(wr.expovariate(1.0 / think))

    await asyncio.gather(*(worker(w) for w in range(conns)))
    return {n: {"requests": len(lat[n]), "errors": errors[n], "p50_ms": pct(lat[n], 50) * 1e3,
                "p90_ms": pct(lat[n], 90) * 1e3} for n in names}


async def main(a: argparse.Namespace) -> dict:
    vr = shutil.which("vllm-router") or str(Path(PY).parent / "vllm-router")
    if not Path(vr).exists():
        raise SystemExit("vllm-router not installed: pip install vllm-router (the 'bench' extra)")
    with ExitStack() as stack:
        engines, specs, procs = _engines(a, a.engines, stack)
        routers: dict[str, tuple[str, object]] = {}
        variants = {"llmd": os.getcwd()}
        if a.baseline_src:
            variants["llmd-before"] = a.baseline_src
        for name, src in variants.items():
            port = free_port()
            routers[name] = (f"http://127.0.0.1:{port}", spawn(
                [PY, "-m", "llmd_kserve.cli", "router", "--host", "127.0.0.1", "--port", str(port), "--config",
                 a.config, "--endpoints", ",".join(specs)], stack, env={**os.environ, "PYTHONPATH": src}))
        port = free_port()
        routers["vllm-router"] = (f"http://127.0.0.1:{port}", spawn(
            [vr, "--host", "127.0.0.1", "--port", str(port), "--policy", a.vllm_policy, "--prometheus-host",
             "127.0.0.1", "--prometheus-port", str(free_port()), "--log-level", "warning", "--worker-urls",
             *engines], stack))
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                         timeout=aiohttp.ClientTimeout(total=60)) as s:
            for url, proc in zip(engines, procs, strict=True):
                await wait_ready(s, url, proc)
            for url, proc in routers.values():
                await wait_ready(s, url, proc, timeout=120)  # type: ignore[arg-type]
            targets = {"direct": engines, **{n: [u] for n, (u, _) in routers.items()}}
            await mixed_phase(s, targets, a.conns, a.rate, 2.0, a.model, 0)  # warm-up: connections, code paths
            rounds = []
            for r in range(a.rounds):
                c0 = {n: cpu_seconds(p.pid) for n, (_, p) in routers.items()}  # type: ignore[attr-defined]
                m0, t0 = machine_busy_s(), time.monotonic()
                row: dict = await mixed_phase(s, targets, a.conns, a.rate, a.seconds, a.model, a.seed + r + 1)
                dt = time.monotonic() - t0
                row["machine_core_pct"] = (machine_busy_s() - m0) / dt * 100
                row["loadavg_1m"] = float(Path("/proc/loadavg").read_text().split()[0])
                row["req_per_s"] = sum(row[n]["requests"] for n in targets) / a.seconds
                for n, (_, p) in routers.items():
                    row[n]["router_core_pct"] = (cpu_seconds(p.pid) - c0[n]) / dt * 100  # type: ignore[attr-defined]
                    row[n]["added_p50_ms"] = row[n]["p50_ms"] - row["direct"]["p50_ms"]
                    row[n]["added_p90_ms"] = row[n]["p90_ms"] - row["direct"]["p90_ms"]
                rounds.append(row)
                print(json.dumps({"round": r, **row}), flush=True)
    return {
        "workload": {"engines": a.engines, "time_scale": a.time_scale, "config": a.config, "conns": a.conns,
                     "rate": a.rate, "seconds": a.seconds, "rounds": a.rounds, "machine": f"{os.cpu_count()}-core"},
        "rounds": rounds,
        "median_added_ms": {n: {k: statistics.median(x[n][f"added_{k}_ms"] for x in rounds) for k in ("p50", "p90")}
                            for n in routers},
    }


def cli() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--engines", type=int, default=1)
    p.add_argument("--time-scale", type=float, default=0.1)
    p.add_argument("--config", default="default")
    p.add_argument("--vllm-policy", default="cache_aware")
    p.add_argument("--model", default="llama-8b-shape")
    p.add_argument("--conns", type=int, default=64)
    p.add_argument("--rate", type=float, default=200.0, help="total requests/s of all connections together")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--baseline-src", default="", help="also run our router from this source tree (before/after)")
    a = p.parse_args()
    result = aio_run(main(a))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    cli()
