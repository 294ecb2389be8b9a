"""Check a capacity plan by its neighbours: run ``llmd_kserve.plan.plan`` for a workload, then simulate (on every
check seed) the plan and every deployment around it: the plan's form with one replica
fewer, each searched aggregated config at one replica fewer and at the same count, and every P:D split of the
same or one fewer replica. The plan holds when it meets the SLO on every check seed and no cheaper neighbour does.

    python benchmarks/plan_check.py shared-prefix --rate 60
    python benchmarks/plan_check.py rag-reasoning --rate 24 --check-seeds 0,1
    python benchmarks/plan_check.py /work/traces/conversation_trace.jsonl --window 0:600 --slo-ttft 2 --slo-tpot 0.05

Prints the plan, then one markdown row per deployment (GPUs, attainment per seed, TTFT and TPOT p90, verdict); a
run that can no longer meet the SLO stops there, and its attainment shows as an upper bound (``< x%``);
``--json FILE`` keeps the plan and the neighbour runs.
"""

from __future__ import annotations

import argparse
import json
import os
import time

from llmd_kserve.plan import Deployment, plan, resolve, summary_lines
from llmd_kserve.plan.planner import CONFIGS, PD_CONFIGS, REFERENCE
from llmd_kserve.plan.runs import Simulations


def neighbours(best: Deployment, configs: list[str], pd_configs: list[str]) -> list[Deployment]:
    """The plan, its form one replica smaller, aggregated configs at n-1 and n, P/D splits of n-1 and n replicas."""
    n = best.replicas
    out = [best]
    if best.prefill:
        out += [Deployment(best.config, p, d) for p, d in ((best.prefill - 1, best.decode),
                                                            (best.prefill, best.decode - 1)) if p >= 1 and d >= 1]
    for c in configs:
        out += [Deployment(c, 0, k) for k in (n - 1, n)]
    for c in pd_configs:
        out += [Deployment(c, p, k - p) for k in (n - 1, n) for p in range(1, k)]
    seen, keep = set(), []
    for d in out:
        if d.decode >= 1 and d not in seen:
            seen.add(d)
            keep.append(d)
    return keep


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("workload")
    ap.add_argument("--rate", type=float, default=None)
    ap.add_argument("--slo-ttft", type=float, default=None)
    ap.add_argument("--slo-tpot", type=float, default=None)
    ap.add_argument("--attainment", type=float, default=0.95)
    ap.add_argument("--seeds", default="0", help="the plan's seeds")
    ap.add_argument("--check-seeds", default="0,1", help="the neighbour sweep's seeds (every one must meet)")
    ap.add_argument("--window", default=None)
    ap.add_argument("--max-requests", type=int, default=None)
    ap.add_argument("--duration", type=float, default=20.0)
    ap.add_argument("--max-replicas", type=int, default=16)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    t0 = time.perf_counter()
    workload, named = resolve(a.workload, duration_s=a.duration, window=a.window, max_requests=a.max_requests)
    rate = a.rate or named
    seeds = [int(s) for s in a.seeds.split(",")]
    p = plan(workload, rate, slo_ttft=a.slo_ttft, slo_tpot=a.slo_tpot, attainment=a.attainment, seeds=seeds,
             max_replicas=a.max_replicas)
    for line in summary_lines(p):
        print(line)
    print("options: " + "; ".join(f"{e.deployment.label} {e.gpus:g} GPUs {e.attainment:.1%}" for e in p.options))
    check = Simulations(workload, p.slo, a.attainment, profile=p.profile,
                        seeds=[int(s) for s in a.check_seeds.split(",")], num_blocks=workload.num_blocks,
                        gpus_per_replica=p.gpus_per_replica)
    print("\n| deployment | GPUs | attainment per seed | TTFT p90 ms | TPOT p90 ms | meets |")
    print("|---|---:|---:|---:|---:|---|")
    rows = []
    for d in neighbours(p.deployment, [c for c in CONFIGS if c not in REFERENCE], list(PD_CONFIGS)):
        e = _all_seeds(check, d, p.rate)
        rows.append(e)
        tag = " (plan)" if d == p.deployment else ""
        print(f"| {d.label}{tag} | {e.gpus:g} | {' / '.join(_pct(x, st) for x, st in zip(e.per_seed, e.stopped, strict=True))} | "
              f"{_ms(e.ttft_p90)} | {_ms(e.tpot_p90)} | {'yes' if e.meets else 'no'} |", flush=True)
    plan_row = rows[0]
    cheaper = [e for e in rows[1:] if e.gpus < plan_row.gpus and e.meets]
    print(f"\nplan meets the SLO on seeds {a.check_seeds}: {'yes' if plan_row.meets else 'NO'}; cheaper neighbours "
          f"meeting it: {', '.join(e.deployment.label for e in cheaper) or 'none'}  "
          f"({time.perf_counter() - t0:.0f} s, load average {os.getloadavg()[0]:.2f})")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"plan": p.to_json(), "neighbours": [e.ev.to_json() | {"stopped_per_seed": list(e.stopped)}
                                                           for e in rows]}, f, indent=1)


def _all_seeds(sims: Simulations, d: Deployment, rate: float):
    """Every check seed runs (a failing seed does not stop the others, so each seed's attainment is shown)."""
    from dataclasses import replace

    evs = []
    for s in sims.seeds:
        one = Simulations(sims.workload, sims.slo, sims.attainment, profile=sims.profile, seeds=[s],
                          num_blocks=sims.num_blocks, gpus_per_replica=sims.gpus_per_replica)
        evs.append(one(d, rate))
    worst = min(evs, key=lambda e: e.attainment)
    stopped = tuple(e.stopped_early for e in evs)
    ttft = [e.ttft_p90 for e in evs if e.ttft_p90 is not None]
    tpot = [e.tpot_p90 for e in evs if e.tpot_p90 is not None]
    row = replace(worst, meets=all(e.meets for e in evs), seeds=tuple(sims.seeds),
                  per_seed=tuple(e.attainment for e in evs), ttft_p90=max(ttft, default=None),
                  tpot_p90=max(tpot, default=None))
    return Row(row, stopped)


class Row:
    """A neighbour's evaluation over every check seed, and which seeds' runs stopped early."""

    def __init__(self, ev, stopped):
        self.ev, self.stopped = ev, stopped

    def __getattr__(self, name):
        return getattr(self.ev, name)


def _pct(x: float, stopped: bool) -> str:
    return f"< {x:.1%}" if stopped else f"{x:.1%}"


def _ms(v: float | None) -> str:
    return "–" if v is None else f"{v * 1000:.0f}"


if __name__ == "__main__":
    main()
