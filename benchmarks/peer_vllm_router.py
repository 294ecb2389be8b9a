"""Live side by side with a peer: our router configs and vLLM's own router (PyPI ``vllm-router``, Rust) on the same
simulated engines, the same requests, one load generator; hit rates from the engines' own prefix-cache counters.

Every policy starts from cold caches (``/reset_prefix_cache`` on every engine). Router CPU is the router process's
user+system time (``/proc/<pid>/stat``) over the run, per 1,000 requests. The peer is optional (extra ``bench``:
``pip install 'llmd-kserve[bench]'``); without its binary the peer policies are skipped with a note.

Usage: .venv/bin/python benchmarks/peer_vllm_router.py [--scenario shared-prefix] [--rate 8] [--num-requests 200]
       [--engines 4] [--time-scale 2] [--ours default,approx-prefix,round-robin]
       [--peer cache_aware,power_of_two,round_robin] [--seeds 0]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from llmd_kserve.bench.loadgen import LoadConfig, run_load
from llmd_kserve.bench.scenarios import SCENARIOS
from llmd_kserve.bench.stats import SLO, summarize
from llmd_kserve.bench.workloads import ArrivalSpec
from llmd_kserve.stack import LocalStack
from llmd_kserve.stack.procs import free_port


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_ready(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready after {timeout:.0f} s")


def reset(engine_urls: list[str]) -> None:
    for url in engine_urls:
        with urllib.request.urlopen(urllib.request.Request(f"{url}/reset_prefix_cache", method="POST"), timeout=10):
            pass


def run_one(target: str, pid: int, reqs, rate: float, engines: list[str], slo: SLO) -> dict:  # noqa: ANN001
    reset(engines)
    c0 = cpu_s(pid)
    res = asyncio.run(run_load(reqs, ArrivalSpec(pattern="poisson", rate=rate),
                               LoadConfig(target=target, engine_urls=engines, progress=False)))
    cpu = cpu_s(pid) - c0
    s = summarize(res.results, res.wall_s, slo, engine_hit_rate=res.engine_hit_rate)
    return {"ttft_p50": s["ttft_p50"], "ttft_p90": s["ttft_p90"], "attain": s["slo_attainment"],
            "hit": res.engine_hit_rate, "errors": s["errors"], "cpu_per_1k": 1000 * cpu / max(1, len(reqs))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", default="shared-prefix")
    ap.add_argument("--rate", type=float, default=8.0)
    ap.add_argument("--num-requests", type=int, default=200)
    ap.add_argument("--engines", type=int, default=4)
    ap.add_argument("--time-scale", type=float, default=2.0, help="engines this much slower than real time")
    ap.add_argument("--ours", default="default,approx-prefix,round-robin")
    ap.add_argument("--peer", default="cache_aware,power_of_two,round_robin")
    ap.add_argument("--seeds", default="0")
    a = ap.parse_args()
    sc = SCENARIOS[a.scenario]
    slo = SLO(sc.slo_ttft_s * a.time_scale, sc.slo_tpot_s * a.time_scale)
    beside = Path(sys.executable).parent / "vllm-router"  # the venv's console script, also when not on PATH
    peer_bin = shutil.which("vllm-router") or (str(beside) if beside.exists() else None)
    engine_args = ("--num-blocks", str(sc.num_blocks)) if sc.num_blocks else ()
    print(f"scenario {sc.name} ({sc.why}); {a.engines} engines x time-scale {a.time_scale}, {a.num_requests} "
          f"requests at {a.rate:g}/s, SLO {slo}")
    print("| router | policy | seed | TTFT p50 ms | TTFT p90 ms | SLO attained | hit rate | router CPU s/1k | errors |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    ours = [p for p in a.ours.split(",") if p]
    with LocalStack(engines=a.engines, config=ours[0] if ours else "round-robin", prometheus=False,
                    engine_args=("--time-scale", str(a.time_scale), *engine_args)) as stack:
        engines = stack.engine_base_urls
        for seed in (int(s) for s in a.seeds.split(",")):
            reqs = sc.build(a.rate, random.Random(seed), a.num_requests)
            for i, policy in enumerate(ours):
                if i:
                    stack.restart_router(policy)
                pid = next(p for p in stack.pids if cpu_s(p) >= 0 and _is_router(p))
                r = run_one(stack.router_url, pid, reqs, a.rate, engines, slo)
                _row("llmd-kserve", policy, seed, r)
            if not peer_bin:
                print("(vllm-router not installed: pip install 'llmd-kserve[bench]'; peer skipped)")
                continue
            for policy in (p for p in a.peer.split(",") if p):
                port, prom = free_port("127.0.0.1"), free_port("127.0.0.1")
                with tempfile.TemporaryFile() as logf:
                    proc = subprocess.Popen([peer_bin, "--host", "127.0.0.1", "--port", str(port), "--worker-urls",
                                             *engines, "--policy", policy, "--prometheus-host", "127.0.0.1",
                                             "--prometheus-port", str(prom), "--log-level", "warning"],
                                            stdout=logf, stderr=subprocess.STDOUT)
                    try:
                        wait_ready(f"http://127.0.0.1:{port}")
                        r = run_one(f"http://127.0.0.1:{port}", proc.pid, reqs, a.rate, engines, slo)
                        _row("vllm-router", policy, seed, r)
                    finally:
                        proc.terminate()
                        proc.wait(10)


def _is_router(pid: int) -> bool:
    return b" router " in Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")


def _row(router: str, policy: str, seed: int, r: dict) -> None:
    print(f"| {router} | {policy} | {seed} | {r['ttft_p50'] * 1e3:.0f} | {r['ttft_p90'] * 1e3:.0f} | "
          f"{r['attain']:.2f} | {r['hit'] if r['hit'] is None else round(r['hit'], 3)} | {r['cpu_per_1k']:.2f} | "
          f"{r['errors']} |", flush=True)


if __name__ == "__main__":
    main()
