"""Benchmark: a hung engine beside a healthy one, the router in front, with stall detection on and off.

Processes: two simulated engines (``llmd-kserve engine --time-scale 0.05``), one started with ``--hang-after 0`` (its
generation hangs from the first request while ``/health`` and ``/metrics`` answer), and the router
(``llmd-kserve router``, default config, ``--stall-factor F --stall-floor 2``). Per factor: 10 sequential completions (8 output
tokens, every other one streamed) with a 30 s client timeout, as a user would send them; reported: answers (200),
client timeouts, decisions that sent a request to the hung engine, stalls the router counted, the wall time of the
10 and the router's CPU seconds (psutil, user + system) over them.

    .venv/bin/python benchmarks/hung_engine.py [--factors 10,0]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.faults.procs import engine, metric, request, router, running  # noqa: E402


def run(tmp: Path, factor: str) -> dict:
    good, hung = engine(tmp, "good"), engine(tmp, "hung", "--hang-after", "0")
    with running(good, hung):
        r = router(tmp, f"{good.url},{hung.url}", "--stall-factor", factor, "--stall-floor", "2")
        with running(r):
            proc = psutil.Process(r.pid)
            cpu0, t0 = sum(proc.cpu_times()[:2]), time.monotonic()
            outcomes: list[tuple[int | str, float]] = []
            for i in range(10):
                body = {"model": "llama-8b-shape", "max_tokens": 8, "prompt": f"request {i} " * 6, "stream": i % 2 == 1}
                start = time.monotonic()
                try:
                    status: int | str = request(r.url + "/v1/completions", body, timeout=30)[0]
                except OSError as exc:  # the client's own timeout
                    status = type(exc).__name__
                outcomes.append((status, round(time.monotonic() - start, 2)))
            total, cpu = time.monotonic() - t0, sum(proc.cpu_times()[:2]) - cpu0
            with urllib.request.urlopen(r.url + "/metrics", timeout=10) as resp:
                text = resp.read().decode()
            return {"stall_factor": factor, "ok": sum(s == 200 for s, _ in outcomes),
                    "client_timeouts": sum(isinstance(s, str) for s, _ in outcomes),
                    "sent_to_hung": int(metric(text, "llmd_router_decisions_total", endpoint=hung.url)),
                    "stalls": int(metric(text, "llmd_router_stalls_total", endpoint=hung.url)),
                    "total_s": round(total, 1), "router_cpu_s": round(cpu, 2),
                    "load": [round(x, 1) for x in os.getloadavg()], "outcomes": outcomes}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--factors", default="10,0", help="--stall-factor values to run, in order (0: off)")
    a = p.parse_args()
    for factor in a.factors.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            print(json.dumps(run(Path(tmp), factor)), flush=True)


if __name__ == "__main__":
    main()
