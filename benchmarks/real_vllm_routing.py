"""Routing policies on real vLLM 0.32 CPU replicas: TTFT, engine prefix-cache hit rate, start-up time and memory.

Runs the live phase of ``llmd-kserve demo --engine vllm`` (``llmd_kserve.demo_live.run_live``): 2 vLLM replicas of
the tiny random-weights Llama, one core and a 16,384-token KV cache each, the router keying prompts with the model's
tokenizer; the same requests with the same Poisson arrival times for every policy, the router restarted and the
engines' prefix caches reset between policies (after one warm-up request per replica). Also records the time from
launch until both replicas answer ``/health`` (started together) and each replica's memory (RSS and PSS summed
over its process tree: the API server, its engine core and their helpers), once up and again after the last policy, the load
average before and after, and per policy how many repeat requests of a prefix group went to the replica that served
the group's previous request; from the router's decision log, why the others moved and how its predicted cached
tokens compare with the engines' reported ones.

    PYTHONPATH=. .venv/bin/python benchmarks/real_vllm_routing.py [--requests 144] [--rate 3] \\
        [--policies round-robin,approx-prefix,default] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import time
import urllib.request
from pathlib import Path
from typing import Any

from llmd_kserve.demo_live import run_live
from llmd_kserve.demo_plan import VLLM_LIVE_LOAD, VLLM_POLICIES, vllm_live_scale
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


def affinity(requests: list[dict]) -> tuple[int, int]:
    """(repeats, those sent to the replica that served the previous request of their prefix group)."""
    last: dict[str, str | None] = {}
    repeats = same = 0
    for r in sorted(requests, key=lambda r: r["start"]):
        group = r["request_id"].split("-")[1]  # sp-g<group>-q<i>
        if group in last:
            repeats += 1
            same += last[group] == r["endpoint"]
        last[group] = r["endpoint"]
    return repeats, same


def moves(decisions: list[dict]) -> dict[str, int] | None:
    """Why repeats left their group's previous replica, from the router's decision log: the prefix scorer gave that
    replica 0 (its index no longer held the prefix: evicted) or more (the load scorers outweighed it). None without
    a prefix scorer."""
    out = {"prefix gone": 0, "load outweighed": 0}
    last: dict[str, str] = {}
    scored = False
    for d in sorted(decisions, key=lambda d: d["time"]):
        scorer = next((k for k in d["scores"] if "prefix" in k), None)
        if scorer is None:
            continue
        scored = True
        group = d["client_request_id"].rsplit("-", 2)[-2]  # <policy>-sp-g<group>-q<i>
        prev = last.get(group)
        if prev is not None and prev != d["target"]:
            out["prefix gone" if d["scores"][scorer].get(prev, 0.0) == 0.0 else "load outweighed"] += 1
        last[group] = d["target"]
    return out if scored else None


def index_vs_engine(decisions: list[dict]) -> dict[str, int]:
    """Per decision, the router's predicted cached tokens against the engine's reported ones."""
    out = {"equal": 0, "engine held more": 0, "index held more": 0}
    for d in decisions:
        predicted, reported = d.get("predicted_cached_tokens"), d.get("reported_cached_tokens")
        if predicted is not None and reported is not None:
            out["equal" if predicted == reported else "engine held more" if reported > predicted
                else "index held more"] += 1
    return out


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

    decisions: dict[str, list[dict]] = {}

    def observe(stack: Any, phase: str) -> None:
        if phase not in ("started", "done"):  # a policy has run: keep its router's decisions
            with urllib.request.urlopen(f"{stack.router_url}/debug/decisions?limit=1000", timeout=30) as resp:
                decisions[phase] = json.loads(resp.read())["decisions"]
            return
        if phase == "started":
            facts["startup_s"] = round(time.perf_counter() - t0, 1)
        engine_pids = stack.pids[:len(stack.engine_urls)]  # engines start first
        facts[f"memory_{phase}"] = [tree_memory(pid) for pid in engine_pids]

    runs = run_live(scale, a.policies.split(","), a.seed, vllm_python=python, observe=observe)
    facts["load_after"] = os.getloadavg()
    print(json.dumps({k: v for k, v in facts.items() if k != "scale"}))
    print(f"{'policy':15s} {'n':>4s} {'err':>4s} {'TTFT p50 ms':>12s} {'TTFT p90 ms':>12s} {'TPOT p50 ms':>12s} "
          f"{'hit rate':>9s} {'usage hit':>9s} {'same replica':>12s}")
    for r in runs:
        s = r["summary"]
        repeats, same = affinity(r["requests"])
        print(f"{r['policy']:15s} {s['n']:4d} {s['errors']:4d} {s['ttft_p50'] * 1000:12.1f} "
              f"{s['ttft_p90'] * 1000:12.1f} {s['tpot_p50'] * 1000:12.1f} {s['cache_hit_rate_engine']:9.1%} "
              f"{s['cache_hit_rate_usage']:9.1%} {f'{same}/{repeats}':>12s}")
    for policy, ds in decisions.items():
        if (moved := moves(ds)) is not None:
            print(f"{policy}: repeats sent away from the replica of the group's previous request: {moved}; "
                  f"predicted vs reported cached tokens: {index_vs_engine(ds)}")
    if a.json:
        Path(a.json).write_text(json.dumps({"facts": facts, "runs": runs, "decisions": decisions}, indent=1,
                                           default=str))


if __name__ == "__main__":
    main()
