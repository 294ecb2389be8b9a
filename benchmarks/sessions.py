"""Session affinity in the cluster simulator: the agentic and chat scenarios and the Mooncake conversation trace,
each with the ``default`` config (prefix affinity, no notion of a session) and the ``sessions`` config (the default
plus ``session-affinity-filter``), and with the cache-blind ``load-only`` without and with the filter
(``load-only+sessions``: what session affinity does alone, where the router cannot see the engines' caches). Per run: requests, engines' prefix-cache hit rate, TTFT p50/p90, session moves
and the sessions that moved at least once.

The trace carries no session ids: a request whose block hash ids extend an earlier request's continues that
request's session (``llmd_kserve.bench.trace_sessions``).

Usage: python benchmarks/sessions.py [--scenarios agentic,chat] [--rates 1,2] [--seeds 0]
       [--trace /work/traces/conversation_trace.jsonl --window 0:1200 --engines 8] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from llmd_kserve.bench.runner import sim_context_len
from llmd_kserve.bench.scenarios import SCENARIOS
from llmd_kserve.bench.stats import SLO, summarize
from llmd_kserve.bench.trace_sessions import with_sessions
from llmd_kserve.bench.workloads import build_requests, load_trace, parse_window
from llmd_kserve.cluster_sim import SimOptions
from llmd_kserve.cluster_sim.sim import ClusterSim

sys.path.insert(0, str(Path(__file__).resolve().parent))
from routing_scenarios import sim_options  # noqa: E402

CONFIGS = ("default", "sessions", "load-only", "load-only+sessions")
SHIPPED = Path(__file__).resolve().parents[1] / "llmd_kserve" / "config" / "shipped"


def config_path(name: str, tmp: Path) -> str:
    """A shipped config by name; ``NAME+sessions``: that config with ``session-affinity-filter`` as its first filter
    after the role filter (written to ``tmp``)."""
    base, plus, _ = name.partition("+")
    if not plus:
        return name
    cfg = yaml.safe_load((SHIPPED / f"{base}.yaml").read_text())
    cfg["plugins"].insert(1, {"type": "session-affinity-filter", "parameters": {"mode": "approx"}})
    refs = cfg["schedulingProfiles"][0]["plugins"]
    refs.insert(1, {"pluginRef": "session-affinity-filter"})
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def measure(sim: ClusterSim, requests: list, slo: SLO) -> dict[str, Any]:
    """Run ``requests`` on ``sim``: hit rate, TTFT p50/p90, moves."""
    t0 = time.perf_counter()
    run = sim.run(requests)
    s = summarize(run.results, run.wall_s, slo, engine_hit_rate=run.engine_hit_rate)
    filters = [p for p in sim.scheduler.plugins.values() if p.type == "session-affinity-filter"]
    moves = sum(sum(f.moves.values()) for f in filters)
    moved = sum(f.table.moved() for f in filters)
    sessions = len({r.session_id for r in requests if r.session_id})
    return {"n": len(requests), "sessions": sessions, "hit": run.engine_hit_rate, "ttft_p50": s["ttft_p50"],
            "ttft_p90": s["ttft_p90"], "errors": s["errors"], "moves": moves if filters else None,
            "moved_sessions": moved if filters else None,
            "reasons": dict(sum((f.moves for f in filters), start=Counter())),
            "sim_s": round(time.perf_counter() - t0, 1)}


def row(workload: str, config: str, r: dict[str, Any]) -> str:
    moves = "–" if r["moves"] is None else f"{r['moves']} ({r['moved_sessions']} sessions)"
    return (f"| {workload} | {config} | {r['n']} | {r['sessions']} | {r['hit']:.3f} | {r['ttft_p50'] * 1e3:.0f} | "
            f"{r['ttft_p90'] * 1e3:.0f} | {moves} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenarios", default="agentic,chat")
    ap.add_argument("--rates", default="", help="req/s per scenario run (default: each scenario's matched rate and "
                                                "twice it)")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--trace", type=Path, default=None, help="a Mooncake trace (e.g. the conversation trace)")
    ap.add_argument("--window", default="0:1200", help="seconds of the trace to replay")
    ap.add_argument("--engines", type=int, default=8, help="simulated engines for the trace")
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="sessions-bench-"))
    configs = a.configs.split(",")
    out: list[dict[str, Any]] = []
    print("| workload | config | requests | sessions | hit rate | TTFT p50 ms | TTFT p90 ms | session moves |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for name in [s for s in a.scenarios.split(",") if s]:
        sc = SCENARIOS[name]
        rates = [float(r) for r in a.rates.split(",")] if a.rates else [sc.matched_rate, 2 * sc.matched_rate]
        for rate in rates:
            for seed in (int(s) for s in a.seeds.split(",")):
                reqs = sc.build(rate, random.Random(seed * 7919 + int(rate * 1000)), sc.num_requests)
                for config in configs:
                    r = measure(ClusterSim(config_path(config, tmp), sim_options(sc, seed)), reqs, SLO(sc.slo_ttft_s, sc.slo_tpot_s))
                    label = f"{name} @ {rate:g}/s seed {seed}"
                    print(row(label, config, r), flush=True)
                    out.append({"workload": label, "config": config, **r})
    if a.trace is not None:
        spec = load_trace(a.trace, window=parse_window(a.window), max_model_len=sim_context_len())
        reqs = with_sessions(spec, build_requests(spec, random.Random(0)))
        for config in configs:
            r = measure(ClusterSim(config_path(config, tmp), SimOptions(engines=a.engines, seed=0)), reqs, SLO())
            label = f"{a.trace.name} {a.window}"
            print(row(label, config, r), flush=True)
            out.append({"workload": label, "config": config, **r})
    if a.json:
        a.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
