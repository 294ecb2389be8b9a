"""A capacity plan run live at small scale: plan a workload in the cluster simulator, start the plan's deployment
as a local stack (simulated engines as processes, the real router over HTTP), replay the same requests (same
seed, same arrival times) through it, and compare the SLO attainment live with the simulator's prediction.

    python benchmarks/plan_live.py --rate 12 --max-replicas 4
    python benchmarks/plan_live.py --rate 12 --deployment pd-predicted-ttft:1:2   # a given deployment instead

Prints the plan, then one row per deployment run live: predicted and live attainment, TTFT and TPOT p90.
"""

from __future__ import annotations

import argparse
import os
import time

from llmd_kserve.aio import run
from llmd_kserve.bench.loadgen import LoadConfig, run_load
from llmd_kserve.bench.stats import SLO, summarize
from llmd_kserve.bench.workloads import ArrivalSpec, SharedPrefixSpec
from llmd_kserve.plan import Deployment, from_spec, plan, summary_lines
from llmd_kserve.plan.runs import Simulations
from llmd_kserve.stack import LocalStack

WORKLOAD = SharedPrefixSpec(num_groups=12, prompts_per_group=40, system_prompt_len=2000, question_len=64, output_len=48)


def live(d: Deployment, requests: list, slo: SLO, num_blocks: int, seed: int) -> dict:
    kw = {"prefill": d.prefill, "decode": d.decode} if d.prefill else {"engines": d.decode}
    with LocalStack(config=d.config, prometheus=False, seed=seed, engine_args=(f"--num-blocks={num_blocks}",),
                    **kw) as stack:
        load = LoadConfig(target=stack.router_url, timeout_s=120, engine_urls=stack.engine_base_urls,
                          progress=False)
        result = run(run_load(requests, ArrivalSpec(pattern="trace"), load))
    return summarize(result.results, result.wall_s, slo)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=12.0)
    ap.add_argument("--slo-ttft", type=float, default=0.5)
    ap.add_argument("--slo-tpot", type=float, default=0.05)
    ap.add_argument("--num-blocks", type=int, default=800, help="KV blocks per engine (small: prefixes compete)")
    ap.add_argument("--duration", type=float, default=30.0)
    ap.add_argument("--max-replicas", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--neighbour", action="store_true", help="also run the plan's form with one replica fewer")
    a = ap.parse_args()
    wl = from_spec("shared-prefix (small)", WORKLOAD, duration_s=a.duration)
    slo = SLO(a.slo_ttft, a.slo_tpot)
    p = plan(wl, a.rate, slo_ttft=a.slo_ttft, slo_tpot=a.slo_tpot, max_replicas=a.max_replicas,
             num_blocks=a.num_blocks, seeds=(a.seed,), headroom=False)
    for line in summary_lines(p):
        print(line)
    deps = [p.deployment]
    d = p.deployment
    if a.neighbour and d.replicas > 1:
        deps.append(Deployment(d.config, d.prefill, d.decode - 1) if d.prefill and d.decode > 1 else
                    Deployment(d.config, 0, d.decode - 1))
    full = Simulations(wl, slo, 0.95, profile=p.profile, seeds=[a.seed], num_blocks=a.num_blocks,
                       gpus_per_replica=1.0, early_stop=False)
    requests = wl.requests(a.rate, a.seed)
    print(f"\n{len(requests)} requests at {a.rate:g} req/s (seed {a.seed}); SLO TTFT {a.slo_ttft:g} s, "
          f"TPOT {a.slo_tpot * 1000:g} ms")
    print("| deployment | predicted attainment | live attainment | predicted TTFT p90 ms | live TTFT p90 ms | "
          "predicted TPOT p90 ms | live TPOT p90 ms | live errors |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for dep in deps:
        pred = full(dep, a.rate)
        t0 = time.perf_counter()
        s = live(dep, requests, slo, a.num_blocks, a.seed)
        print(f"| {dep.label} | {pred.attainment:.1%} | {s['slo_attainment']:.1%} | {_ms(pred.ttft_p90)} | "
              f"{_ms(s['ttft_p90'])} | {_ms(pred.tpot_p90)} | {_ms(s['tpot_p90'])} | {s['errors']} |  "
              f"<!-- {time.perf_counter() - t0:.0f} s, load average {os.getloadavg()[0]:.2f} -->", flush=True)


def _ms(v: float | None) -> str:
    return "–" if v is None else f"{v * 1000:.0f}"


if __name__ == "__main__":
    main()
