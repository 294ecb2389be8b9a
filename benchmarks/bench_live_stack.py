"""Live HTTP benchmark: a LocalStack of simulated engines, one shared-prefix workload, several router configs.

Usage: .venv/bin/python benchmarks/bench_live_stack.py [--engines 2] [--num-requests 120] [--rate 6]
       [--configs round-robin,precise-prefix,default] [--json out.json] [--html out.html]
Prints the bench summary table; each config runs on freshly started engines (cold caches).
"""

from __future__ import annotations

import argparse
import asyncio
import random

from llmd_kserve.bench.loadgen import LoadConfig, run_load
from llmd_kserve.bench.report import build_report, print_table, run_entry_from, write_json
from llmd_kserve.bench.runner import workload_info
from llmd_kserve.bench.stats import SLO
from llmd_kserve.bench.workloads import ArrivalSpec, SharedPrefixSpec, make_workload
from llmd_kserve.stack import LocalStack
from llmd_kserve.viz.report_page import write_html


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--engines", type=int, default=2)
    ap.add_argument("--num-requests", type=int, default=120)
    ap.add_argument("--rate", type=float, default=6.0)
    ap.add_argument("--configs", default="round-robin,precise-prefix,default")
    ap.add_argument("--num-groups", type=int, default=8)
    ap.add_argument("--system-prompt-len", type=int, default=2048)
    ap.add_argument("--engine-arg", action="append", default=[], help="extra engine flag (repeat)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--html", default=None)
    a = ap.parse_args()
    spec = SharedPrefixSpec(num_groups=a.num_groups, prompts_per_group=a.num_requests // a.num_groups,
                            system_prompt_len=a.system_prompt_len, question_len=128, output_len=64)
    arrival = ArrivalSpec(pattern="poisson", rate=a.rate)
    slo = SLO(ttft=1.0, tpot=0.1)
    runs = []
    for config in a.configs.split(","):
        requests = make_workload(spec, arrival, random.Random(0), a.num_requests)
        with LocalStack(engines=a.engines, config=config, prometheus=False, engine_args=tuple(a.engine_arg)) as st:
            result = asyncio.run(run_load(requests, arrival, LoadConfig(target=st.router_url,
                                                                         engine_urls=st.engine_base_urls)))
        runs.append(run_entry_from(result, config, slo, scale="live"))
    report = build_report(workload_info(spec, [arrival], num_requests=a.num_requests, engines=a.engines,
                                        machine="2-core CPU sandbox"), runs)
    print_table(report)
    if a.json:
        write_json(report, a.json)
    if a.html:
        write_html(report, a.html)


if __name__ == "__main__":
    main()
