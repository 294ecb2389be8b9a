"""Side by side: our router vs vLLM's Rust router (PyPI ``vllm-router``), same engines, same requests, one run.

Processes: ``--engines`` simulated engines (``llmd-kserve engine``, KV events on), our router (``llmd-kserve
router``) and ``vllm-router`` (``--policy``, bound to 127.0.0.1), both in front of the same engines, and this script
as the load generator. Each round runs every phase against both routers, order flipped every round, and reads each
router's CPU seconds (process and children, ``/proc``) around each phase:

1. ``stream``: ``--stream-requests`` streamed completions at ``--rate`` req/s (open loop, Poisson), prompts from
   ``--groups`` shared text prefixes of ``--prefix-words`` words plus a question, ``--out-tokens`` output tokens
   (``ignore_eos``); CPU-s per 1,000 requests;
2. ``small``: small non-streaming completions (``max_tokens=1``) from ``--conns`` connections for ``--seconds``,
   also sent straight to the engines; CPU-ms per request and the added latency p50 (router minus direct);
3. idle (a separate run, ``--idle-engines 16``): each router in turn in front of that many idle engines, one
   request, then ``--idle-seconds`` of nothing; CPU % of a core of the router and of all engines together.

    PYTHONPATH=. .venv/bin/python benchmarks/router_vs_vllm_router.py [--rounds 3] [--engines 4]
    (needs ``pip install vllm-router``: the ``bench`` extra)

The small-request comparison of ``benchmarks/RESULTS.md`` is ``--engines 1 --stream-requests 0 --conns 64
--vllm-policy round_robin,cache_aware``: one engine, 64 connections, vllm-router with both policies (its
``cache_aware`` keeps a radix tree of request texts and costs it ~1.6x the CPU of ``round_robin``; ratios are to
the first policy named). ``--py-spy FILE`` with ``--stream-requests 0`` profiles our router's first small phase.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from router_overhead import free_port, wait_ready  # noqa: E402

from llmd_kserve.aio import run as aio_run  # noqa: E402
from llmd_kserve.bench.stats import percentile  # noqa: E402

PY = sys.executable
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` and its live descendants."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d.name))
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            f = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(f[11]) + int(f[12])) / TICK
        except (OSError, IndexError, ValueError):
            pass
        todo += children.get(p, [])
    return total


def spawn(argv: list[str], stack: ExitStack, env: dict[str, str] | None = None) -> subprocess.Popen:
    """``env`` with a PYTHONPATH also runs there (``python -m`` puts the working directory first on sys.path)."""
    cwd = env.get("PYTHONPATH") if env else None
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=cwd or None)

    def _stop() -> None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()

    stack.callback(_stop)
    return proc


async def stream_phase(s: aiohttp.ClientSession, url: str, prompts: list[str], rate: float, out_tokens: int,
                       model: str, rng: random.Random) -> dict:
    lat: list[float] = []
    errors = 0

    async def one(p: str) -> None:
        nonlocal errors
        body = {"model": model, "prompt": p, "max_tokens": out_tokens, "stream": True, "ignore_eos": True}
        t0 = time.perf_counter()
        try:
            async with s.post(f"{url}/v1/completions", json=body) as r:
                async for _ in r.content.iter_any():
                    pass
                if r.status != 200:
                    errors += 1
                    return
        except aiohttp.ClientError:
            errors += 1
            return
        lat.append(time.perf_counter() - t0)

    tasks = []
    for p in prompts:
        tasks.append(asyncio.create_task(one(p)))
        await asyncio.sleep(rng.expovariate(rate))
    await asyncio.gather(*tasks)
    return {"ok": len(lat), "errors": errors, "latency_p50_s": percentile(lat, 50) if lat else None}


async def small_phase(s: aiohttp.ClientSession, urls: list[str], conns: int, seconds: float, model: str) -> dict:
    rng = random.Random(conns)  # distinct short prompts: no shared prefix, so both routers spread on load
    bodies = [json.dumps({"model": model, "prompt": " ".join(f"w{rng.randrange(10**5)}" for _ in range(5)),
                          "max_tokens": 1}).encode() for _ in range(256)]
    headers = {"Content-Type": "application/json"}
    lat: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + seconds

    async def worker(w: int) -> None:
        nonlocal errors
        i = w
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            body = bodies[i % len(bodies)]
            i += 1
            try:
                async with s.post(f"{urls[i % len(urls)]}/v1/completions", data=body, headers=headers) as r:
                    await r.read()
                    if r.status != 200:
                        raise RuntimeError(f"HTTP {r.status} from {urls[i % len(urls)]}")
            except aiohttp.ClientError:  # e.g. a keep-alive connection the server closed: counted, not timed
                errors += 1
                continue
            lat.append(time.perf_counter() - t0)

    await asyncio.gather(*(worker(w) for w in range(conns)))
    return {"requests": len(lat), "errors": errors, "latency_p50_ms": (percentile(lat, 50) or 0.0) * 1e3}


def _py_spy(a: argparse.Namespace, proc: subprocess.Popen) -> subprocess.Popen | None:
    """py-spy (the ``bench`` extra) recording ``proc`` into ``a.py_spy`` as collapsed stacks, when asked for."""
    if not a.py_spy:
        return None
    exe = shutil.which("py-spy") or str(Path(PY).parent / "py-spy")
    return subprocess.Popen([exe, "record", "-p", str(proc.pid), "-o", a.py_spy, "-f", "raw", "-r", "200",
                             "--nonblocking"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _stop_spy(spy: subprocess.Popen | None) -> None:
    if spy is not None:
        spy.send_signal(2)
        spy.wait(30)


def _engines(a: argparse.Namespace, n: int, stack: ExitStack) -> tuple[list[str], list[str], list]:
    engines, specs, procs = [], [], []
    for _ in range(n):
        port, kv = free_port(), free_port()
        procs.append(spawn([PY, "-m", "llmd_kserve.cli", "engine", "--host", "127.0.0.1", "--port", str(port),
                            "--time-scale", str(a.time_scale), "--kv-events-endpoint", f"tcp://127.0.0.1:{kv}",
                            "--model", a.model], stack))
        engines.append(f"http://127.0.0.1:{port}")
        specs.append(f"http://127.0.0.1:{port}#kv=tcp://127.0.0.1:{kv}")
    return engines, specs, procs


async def idle_main(a: argparse.Namespace) -> dict:
    """``--idle-engines`` idle engines; each router in turn in front of them: its and the engines' CPU."""
    out: dict = {"workload": {"idle_engines": a.idle_engines, "seconds": a.idle_seconds, "config": a.config}}
    with ExitStack() as stack:
        engines, specs, procs = _engines(a, a.idle_engines, stack)
        async with aiohttp.ClientSession() as s:
            for url, proc in zip(engines, procs, strict=True):
                await wait_ready(s, url, proc)
            await asyncio.sleep(3.0)
            e0 = sum(cpu_seconds(p.pid) for p in procs)
            await asyncio.sleep(a.idle_seconds)
            out["engines_alone_core_pct"] = (sum(cpu_seconds(p.pid) for p in procs) - e0) / a.idle_seconds * 100
            variants = {"llmd": ({"PYTHONPATH": os.getcwd()}, [PY, "-m", "llmd_kserve.cli", "router", "--config", a.config, "--endpoints",
                                      ",".join(specs)])}
            if a.baseline_src:
                variants["llmd-before"] = ({"PYTHONPATH": a.baseline_src}, variants["llmd"][1])
            variants["vllm-router"] = ({}, [shutil.which("vllm-router") or str(Path(PY).parent / "vllm-router"),
                                            "--policy", a.vllm_policy.split(",")[0], "--log-level", "warning", "--worker-urls",
                                            *engines])
            for name, (env, argv) in variants.items():
                with ExitStack() as one:
                    port = free_port()
                    extra = ["--prometheus-host", "127.0.0.1", "--prometheus-port", str(free_port())] \
                        if name == "vllm-router" else []
                    proc = spawn([*argv, "--host", "127.0.0.1", "--port", str(port), *extra], one,
                                 env={**os.environ, **env})
                    await wait_ready(s, f"http://127.0.0.1:{port}", proc, timeout=120)
                    async with s.post(f"http://127.0.0.1:{port}/v1/completions", json={  # one request, then idle
                            "model": a.model, "prompt": "hello", "max_tokens": 2}) as r:
                        await r.read()
                    await asyncio.sleep(3.0)
                    c0, e0 = cpu_seconds(proc.pid), sum(cpu_seconds(p.pid) for p in procs)
                    await asyncio.sleep(a.idle_seconds)
                    router = (cpu_seconds(proc.pid) - c0) / a.idle_seconds * 100
                    eng = (sum(cpu_seconds(p.pid) for p in procs) - e0) / a.idle_seconds * 100
                    out[name] = {"router_core_pct": router, "engines_core_pct": eng, "total_core_pct": router + eng}
                    print(json.dumps({name: out[name]}), flush=True)
    return out


async def main(a: argparse.Namespace) -> dict:
    rng = random.Random(a.seed)
    vr = shutil.which("vllm-router") or str(Path(PY).parent / "vllm-router")
    if not Path(vr).exists():
        raise SystemExit("vllm-router not installed: pip install vllm-router (the 'bench' extra)")
    with ExitStack() as stack:
        engines, specs, procs = _engines(a, a.engines, stack)
        ours_port = free_port()
        ours = spawn([PY, "-m", "llmd_kserve.cli", "router", "--host", "127.0.0.1", "--port", str(ours_port),
                      "--config", a.config, "--endpoints", ",".join(specs), *a.router_args], stack)
        routers = {"llmd": (f"http://127.0.0.1:{ours_port}", ours)}
        for i, policy in enumerate(a.vllm_policy.split(",")):  # the first is "vllm-router", the ratios' denominator
            vr_port, vr_prom = free_port(), free_port()
            theirs = spawn([vr, "--host", "127.0.0.1", "--port", str(vr_port), "--policy", policy,
                            "--prometheus-host", "127.0.0.1", "--prometheus-port", str(vr_prom), "--log-level",
                            "warning", "--worker-urls", *engines], stack)
            routers["vllm-router" if i == 0 else f"vllm-router/{policy}"] = (f"http://127.0.0.1:{vr_port}", theirs)
        if a.baseline_src:  # the same router from an older source tree (e.g. `git archive <commit> llmd_kserve`)
            base_port = free_port()
            base = spawn([PY, "-m", "llmd_kserve.cli", "router", "--host", "127.0.0.1", "--port", str(base_port),
                          "--config", a.config, "--endpoints", ",".join(specs)], stack,
                         env={**os.environ, "PYTHONPATH": a.baseline_src})
            routers["llmd-before"] = (f"http://127.0.0.1:{base_port}", base)
        for other in filter(None, a.also_config.split(",")):  # our router with another config, same rounds
            other_port = free_port()
            proc = spawn([PY, "-m", "llmd_kserve.cli", "router", "--host", "127.0.0.1", "--port", str(other_port),
                          "--config", other, "--endpoints", ",".join(specs), *a.router_args], stack)
            routers[f"llmd/{other}"] = (f"http://127.0.0.1:{other_port}", proc)
        groups = [" ".join(f"w{rng.randrange(100000)}" for _ in range(a.prefix_words)) for _ in range(a.groups)]
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                         timeout=aiohttp.ClientTimeout(total=300)) as s:
            for url, proc in zip(engines, procs, strict=True):
                await wait_ready(s, url, proc)
            for url, proc in routers.values():
                await wait_ready(s, url, proc, timeout=120)
            for url, _ in routers.values():  # warm-up: connections, prefixes in every engine's cache
                if a.stream_requests:
                    await stream_phase(s, url, [g + " warm" for g in groups], a.rate, 4, a.model, rng)
                await small_phase(s, [url], a.conns, 1.0, a.model)
            rounds = []
            for r in range(a.rounds):
                names = list(routers)
                order = names[r % len(names):] + names[:r % len(names)]  # rotate: drift hits every router
                row: dict = {"stream_cpu_s_per_1000": {}, "small_cpu_ms_per_req": {}, "small_p50_ms": {}}
                prompts = [f"{rng.choice(groups)} question {rng.randrange(10**9)}?" for _ in range(a.stream_requests)]
                for name in order if a.stream_requests else ():
                    url, proc = routers[name]
                    spy = _py_spy(a, proc) if r == 0 and name == "llmd" else None
                    c0 = cpu_seconds(proc.pid)
                    res = await stream_phase(s, url, prompts, a.rate, a.out_tokens, a.model, rng)
                    row["stream_cpu_s_per_1000"][name] = (cpu_seconds(proc.pid) - c0) / max(res["ok"], 1) * 1e3
                    row.setdefault("stream_errors", {})[name] = res["errors"]
                    _stop_spy(spy)
                row["small_p50_ms"]["direct"] = (await small_phase(s, engines, a.conns, a.seconds, a.model))[
                    "latency_p50_ms"]
                for name in order:
                    url, proc = routers[name]
                    spy = _py_spy(a, proc) if r == 0 and name == "llmd" and not a.stream_requests else None
                    c0 = cpu_seconds(proc.pid)
                    res = await small_phase(s, [url], a.conns, a.seconds, a.model)
                    _stop_spy(spy)
                    row["small_cpu_ms_per_req"][name] = (cpu_seconds(proc.pid) - c0) / res["requests"] * 1e3
                    row["small_p50_ms"][name] = res["latency_p50_ms"]
                    row.setdefault("small_errors", {})[name] = res["errors"]
                rounds.append(row)
                print(json.dumps({"round": r, **row}), flush=True)

    def ratio(key: str) -> list[float]:
        return [x[key]["llmd"] / x[key]["vllm-router"] for x in rounds if x[key]]

    return {
        "workload": {"engines": a.engines, "time_scale": a.time_scale, "config": a.config,
                     "vllm_policy": a.vllm_policy, "stream": f"{a.stream_requests} req at {a.rate}/s, {a.groups} "
                     f"groups x {a.prefix_words}-word (~3 tokens each) prefixes, {a.out_tokens} out", "small": f"{a.conns} conns, "
                     f"{a.seconds} s, max_tokens=1", "rounds": a.rounds, "machine": f"{os.cpu_count()}-core CPU"},
        "rounds": rounds,
        "stream_cpu_ratio": ratio("stream_cpu_s_per_1000"),
        "small_cpu_ratio": ratio("small_cpu_ms_per_req"),
        "added_p50_ms": {n: [x["small_p50_ms"][n] - x["small_p50_ms"]["direct"] for x in rounds] for n in routers},
        "median": {k: statistics.median(ratio(key)) if ratio(key) else None for k, key in (
            ("stream_cpu_ratio", "stream_cpu_s_per_1000"), ("small_cpu_ratio", "small_cpu_ms_per_req"))},
    }


def cli() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--engines", type=int, default=4)
    p.add_argument("--time-scale", type=float, default=1.0)
    p.add_argument("--config", default="default")
    p.add_argument("--vllm-policy", default="cache_aware",
                   help="vllm-router --policy; several, comma-separated: one vllm-router each (ratios to the first)")
    p.add_argument("--model", default="llama-8b-shape")
    p.add_argument("--stream-requests", type=int, default=400)
    p.add_argument("--rate", type=float, default=44.0)
    p.add_argument("--groups", type=int, default=32)
    p.add_argument("--prefix-words", type=int, default=1000)
    p.add_argument("--out-tokens", type=int, default=64)
    p.add_argument("--conns", type=int, default=64)
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--idle-seconds", type=float, default=20.0)
    p.add_argument("--idle-engines", type=int, default=0, help="> 0: only the idle measurement, with this many engines")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--also-config", default="", help="also run our router with these configs (comma-separated) "
                   "in the same rounds")
    p.add_argument("--baseline-src", default="", help="also run our router from this source tree (before/after)")
    p.add_argument("--py-spy", default="", help="write a py-spy raw profile of our router's first stream phase (or, "
                   "with --stream-requests 0, its first small phase) here")
    p.add_argument("--router-args", nargs=argparse.REMAINDER, default=[], help="extra `llmd-kserve router` flags")
    a = p.parse_args()
    result = aio_run(idle_main(a) if a.idle_engines else main(a))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    cli()
