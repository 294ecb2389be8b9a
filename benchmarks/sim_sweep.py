"""Cluster simulator rate sweep: the demo's shared-prefix workload under each policy at several offered loads.

Usage: .venv/bin/python benchmarks/sim_sweep.py [--engines 8] [--rates 30,40,45,50,55,60] [--num-requests 3000]
       [--configs round-robin,default] [--num-groups 192] [--system-prompt-len 6000] [--slo-ttft 0.5 --slo-tpot 0.05]
Prints one line per (rate, config) and the default-vs-round-robin ratios per rate (TTFT p90, goodput).
"""

from __future__ import annotations

import argparse
import random
import time

from llmd_kserve.bench.stats import SLO, summarize
from llmd_kserve.bench.workloads import ArrivalSpec, SharedPrefixSpec, make_workload
from llmd_kserve.cluster_sim import SimOptions, simulate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--engines", type=int, default=8)
    ap.add_argument("--num-blocks", type=int, default=None)
    ap.add_argument("--rates", default="30,40,45,50,55,60")
    ap.add_argument("--num-requests", type=int, default=3000)
    ap.add_argument("--configs", default="round-robin,default")
    ap.add_argument("--num-groups", type=int, default=192)
    ap.add_argument("--system-prompt-len", type=int, default=6000)
    ap.add_argument("--question-len", type=int, default=200)
    ap.add_argument("--output-len", type=int, default=128)
    ap.add_argument("--slo-ttft", type=float, default=0.5)
    ap.add_argument("--slo-tpot", type=float, default=0.05)
    a = ap.parse_args()
    spec = SharedPrefixSpec(num_groups=a.num_groups, prompts_per_group=-(-a.num_requests // a.num_groups),
                            system_prompt_len=a.system_prompt_len, question_len=a.question_len,
                            output_len=a.output_len)
    slo = SLO(a.slo_ttft, a.slo_tpot)
    print(f"workload {spec.model_dump()} n={a.num_requests} engines={a.engines} slo={slo}")
    for rate in (float(r) for r in a.rates.split(",")):
        reqs = make_workload(spec, ArrivalSpec(pattern="poisson", rate=rate), random.Random(0), a.num_requests)
        by_cfg = {}
        for cfg in a.configs.split(","):
            t0 = time.perf_counter()
            run = simulate(reqs, cfg, SimOptions(engines=a.engines, num_blocks=a.num_blocks))
            s = by_cfg[cfg] = summarize(run.results, run.wall_s, slo)
            print(f"rate {rate:5.1f}/s {cfg:15s} TTFT p50 {s['ttft_p50'] * 1e3:7.1f} p90 {s['ttft_p90'] * 1e3:7.1f} ms"
                  f"  TPOT p50 {s['tpot_p50'] * 1e3:5.1f} ms  done {s['request_rps']:5.1f}/s"
                  f"  goodput {s['goodput_rps']:5.1f}/s  hit {s['cache_hit_rate']:.2f}"
                  f"  (sim {time.perf_counter() - t0:.1f}s)", flush=True)
        if "round-robin" in by_cfg and "default" in by_cfg:
            rr, d = by_cfg["round-robin"], by_cfg["default"]
            good = d["goodput_rps"] / rr["goodput_rps"] if rr["goodput_rps"] else float("inf")
            print(f"rate {rate:5.1f}/s default vs round-robin: TTFT p90 {rr['ttft_p90'] / d['ttft_p90']:.1f}x lower, "
                  f"goodput {good:.1f}x higher", flush=True)


if __name__ == "__main__":
    main()
