"""Routing policies on real vLLM 0.32 CPU replicas: TTFT, engine prefix-cache hit rate, start-up time and memory.

Runs the live phase of ``llmd-kserve demo --engine vllm`` (``llmd_kserve.demo.run_live``): 2 vLLM replicas of the
tiny random-weights Llama, one core and a 16,384-token KV cache each, the router keying prompts with the model's
tokenizer; the same requests with the same Poisson arrival times for every policy, the router restarted and the
engines' prefix caches reset between policies (after one warm-up request per replica). Also records the time from
launch until both replicas answer ``/health`` (started together) and each replica's memory (RSS and PSS summed
over its process tree: the API server and its engine core), once up and again after the last policy, and the load
average before and after.

    PYTHONPATH=. .venv/bin/python benchmarks/real_vllm_routing.py [--requests 144] [--rate 3] \\
        [--policies round-robin,approx-prefix,default] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from llmd_kserve.demo import VLLM_LIVE_LOAD, VLLM_POLICIES, run_live, vllm_live_scale
from llmd_kserve.vllm_env import find_vllm_env


def _children(pid: int) -> list[int]:
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


def tree_memory(pid: int) -> dict[str, float]:
    """RSS and PSS in GB of ``pid`` and its descendants (``/proc/<pid>/smaps_rollup``), and how many processes."""
    todo, seen, rss, pss = [pid], 0, 0, 0
    while todo:
        p = todo.pop()
        try:
            text = Path(f"/proc/{p}/smaps_rollup").read_text()
        except OSError:
            continue
        seen += 1
        for line in text.splitlines():
            if line.startswith("Rss:"):
                rss += int(line.split()[1]) * 1024
            elif line.startswith("Pss:"):
                pss += int(line.split()[1]) * 1024
        todo += _children(p)
    return {"rss_gb": round(rss / 1e9, 3), "pss_gb": round(pss / 1e9, 3), "processes": seen}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=None, help="default: the demo's")
    ap.add_argument("--rate", type=float, default=None, help="Poisson arrivals per second (default: the demo's)")
    ap.add_argument("--policies", default=",".join(VLLM_POLICIES))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    python = str(find_vllm_env(python=os.environ.get("LLMD_VLLM_PYTHON") or None).python)
    n, rate = VLLM_LIVE_LOAD
    scale = vllm_live_scale(a.requests or n, a.rate or rate)
    facts: dict[str, Any] = {"load_before": os.getloadavg(), "scale": scale.info()}
    t0 = time.perf_counter()

    def observe(stack: Any, phase: str) -> None:
        if phase == "started":
            facts["startup_s"] = round(time.perf_counter() - t0, 1)
        engine_pids = stack.pids[:len(stack.engine_urls)]  # engines start first
        facts[f"memory_{phase}"] = [tree_memory(pid) for pid in engine_pids]

    runs = run_live(scale, a.policies.split(","), a.seed, vllm_python=python, observe=observe)
    facts["load_after"] = os.getloadavg()
    print(json.dumps({k: v for k, v in facts.items() if k != "scale"}))
    print(f"{'policy':15s} {'n':>4s} {'err':>4s} {'TTFT p50 ms':>12s} {'TTFT p90 ms':>12s} {'TPOT p50 ms':>12s} "
          f"{'hit rate':>9s} {'usage hit':>9s}")
    for r in runs:
        s = r["summary"]
        print(f"{r['policy']:15s} {s['n']:4d} {s['errors']:4d} {s['ttft_p50'] * 1000:12.1f} "
              f"{s['ttft_p90'] * 1000:12.1f} {s['tpot_p50'] * 1000:12.1f} {s['cache_hit_rate_engine']:9.1%} "
              f"{s['cache_hit_rate_usage']:9.1%}")
    if a.json:
        Path(a.json).write_text(json.dumps({"facts": facts, "runs": runs}, indent=1, default=str))


if __name__ == "__main__":
    main()
