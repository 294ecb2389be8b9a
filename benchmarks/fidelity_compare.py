"""Real cells of ``fidelity_quiet.py`` beside simulated runs of ``fidelity.py --sim``, one row per (rate, routing).

    python benchmarks/fidelity_compare.py --real quiet.json --sim sim-2.json sim-4.json ... [--per-request RATE ROUTING]

Each simulated file is one ``fidelity.py --json`` run (its ``rate`` and its runs' routings name the cells). Columns:
real / simulated hit rate (engine counters), TTFT p50 and p90, TPOT p50, waiting queue mean (max), preemptions; then
the real replicas' CPU in cores (CPU seconds / wall seconds of the cell, per replica), the client's, and the load
average at the cell's start and end. ``--per-request`` lists one cell's requests in arrival order with both TTFTs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from fidelity import summarize


def _f(v: Any, fmt: str, scale: float = 1.0) -> str:
    return "-" if v is None else format(v * scale, fmt)


def rows(real: dict[str, Any], sims: list[dict[str, Any]]) -> list[str]:
    by_cell = {(s["rate"], run["routing"]): run for s in sims for run in s["runs"]}
    out = ["| req/s | routing | hit rate (engine) | TTFT p50 ms | TTFT p90 ms | TPOT p50 ms | queue mean (max) | "
           "preemptions | replica CPU, cores | client CPU, cores | load average |",
           "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for cell in real["cells"]:
        sim = by_cell.get((cell["rate"], cell["routing"]))
        r, s = summarize(cell), summarize(sim) if sim else {}

        def pair(key: str, fmt: str, scale: float = 1.0, r: dict = r, s: dict = s) -> str:
            return f"{_f(r.get(key), fmt, scale)} / {_f(s.get(key), fmt, scale)}"

        queue = (f"{_f(r['queue_mean'], '.2f')} ({_f(r['queue_max'], '.0f')}) / "
                 f"{_f(s.get('queue_mean'), '.2f')} ({_f(s.get('queue_max'), '.0f')})")
        wall = cell["wall_s"]
        cores = ", ".join(f"{c / wall:.2f}" for c in cell["replica_cpu_s"])
        out.append(f"| {cell['rate']:g} | {cell['routing']} | {pair('hit_rate_engine', '.3f')} | "
                   f"{pair('ttft_p50', '.0f', 1e3)} | {pair('ttft_p90', '.0f', 1e3)} | {pair('tpot_p50', '.1f', 1e3)} | "
                   f"{queue} | {pair('preemptions', '.0f')} | {cores} | {cell['client_cpu_s'] / wall:.2f} | "
                   f"{cell['load_start']:.1f}-{cell['load_end']:.1f} |")
    return out


def per_request(real: dict[str, Any], sims: list[dict[str, Any]], rate: float, routing: str) -> list[str]:
    cell = next(c for c in real["cells"] if c["rate"] == rate and c["routing"] == routing)
    sim = next(run for s in sims if s["rate"] == rate for run in s["runs"] if run["routing"] == routing)
    by_id = {x["request_id"]: x for x in sim["results"]}
    out = ["| arrival s | request | replica | cached real / sim | TTFT ms real / sim |", "|---:|---|---|---:|---:|"]
    for x in sorted(cell["results"], key=lambda x: x["arrival_s"]):
        y = by_id[x["request_id"]]
        out.append(f"| {x['arrival_s']:.3f} | {x['request_id']} | {y['endpoint']} | {x['cached_tokens']} / "
                   f"{y['cached_tokens']} | {_f(x['ttft'], '.1f', 1e3)} / {_f(y['ttft'], '.1f', 1e3)} |")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--real", type=Path, required=True)
    p.add_argument("--sim", type=Path, nargs="+", required=True)
    p.add_argument("--per-request", nargs=2, metavar=("RATE", "ROUTING"))
    a = p.parse_args(argv)
    real = json.loads(a.real.read_text())
    sims = [json.loads(f.read_text()) for f in a.sim]
    lines = (per_request(real, sims, float(a.per_request[0]), a.per_request[1]) if a.per_request
             else rows(real, sims))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
