"""``llmd-kserve plan``: the smallest deployment meeting an SLO for a workload at a rate (cluster simulator)."""

from __future__ import annotations

import argparse
import sys

from llmd_kserve.cli.args import check_output, csv_list, positive_float, positive_int, rates
from llmd_kserve.defaults import DEFAULT_PROFILE
from llmd_kserve.errors import ConfigError


def _fraction(value: str) -> float:
    x = float(value)
    if not 0 < x <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {value}")
    return x


def _seeds(value: str) -> list[int]:
    try:
        return [int(s) for s in csv_list(value)] or [0]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seeds like 0,1,2, got {value!r}") from None


def add_plan(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plan", help="capacity planning: the fewest GPUs (aggregated or P/D, P:D ratio, router "
                                    "config) meeting a latency SLO at a rate, searched in the cluster simulator")
    p.add_argument("workload", help="a scenario name (shared-prefix, rag-reasoning, …), a trace file (Mooncake "
                                    "JSONL) or a bench JSON (llmd-kserve bench --json)")
    p.add_argument("--rate", type=rates, default=None,
                   help="target rate, req/s; a curve R1,R2,… is planned for its peak (default: a trace's own rate, "
                        "a bench JSON's highest)")
    p.add_argument("--slo-ttft", type=positive_float, default=None, help="TTFT target, seconds (default: the "
                                                                           "scenario's)")
    p.add_argument("--slo-tpot", type=positive_float, default=None, help="TPOT target, seconds (default: the "
                                                                           "scenario's)")
    p.add_argument("--attainment", type=_fraction, default=0.95,
                   help="share of requests that must meet both targets (default 0.95)")
    p.add_argument("--profile", default=DEFAULT_PROFILE, help="latency profile of the engines (a built-in name or "
                                                               "a YAML/JSON file)")
    p.add_argument("--configs", type=csv_list, default=None,
                   help="aggregated router configs to search (default: default,round-robin)")
    p.add_argument("--pd-configs", type=csv_list, default=None,
                   help="P/D router configs to search ('' for none; default: pd-predicted-ttft)")
    p.add_argument("--reference", type=csv_list, default=None,
                   help="configs searched for comparison only, never the plan (default: round-robin)")
    p.add_argument("--max-replicas", type=positive_int, default=16, help="the search's upper bound")
    p.add_argument("--gpus-per-replica", type=positive_float, default=1.0,
                   help="GPUs of one engine replica (tensor parallelism); the cost counted")
    p.add_argument("--num-blocks", type=positive_int, default=None,
                   help="KV blocks per engine (default: the scenario's, else the profile's)")
    p.add_argument("--seeds", type=_seeds, default=[0], help="workload seeds; every one must meet the SLO (0,1,…)")
    p.add_argument("--duration", type=positive_float, default=20.0,
                   help="virtual seconds of arrivals per run of a synthetic workload (requests = rate x duration)")
    p.add_argument("--window", default=None, metavar="START:END", help="trace: only these seconds of it")
    p.add_argument("--max-requests", type=positive_int, default=None, help="trace: at most this many requests")
    p.add_argument("--no-headroom", dest="headroom", action="store_false",
                   help="skip measuring the highest rate the plan still meets")
    p.add_argument("--json", nargs="?", const="-", default=None, metavar="FILE",
                   help="write the plan as JSON (times in seconds) to FILE, or to stdout instead of the tables")
    p.add_argument("--render", default=None, metavar="DIR", help="write the plan's KServe manifests here")
    p.add_argument("--name", default="llmd", help="deployment name in the manifests")
    p.add_argument("--namespace", default="llmd", help="namespace in the manifests")
    p.add_argument("--no-progress", action="store_true", help="no progress bar and no line per simulated run")
    p.set_defaults(func=_cmd_plan)


def _cmd_plan(a: argparse.Namespace) -> int:
    from rich.console import Console

    from llmd_kserve.bench.progress import RunProgress
    from llmd_kserve.kube.spec import parse_spec
    from llmd_kserve.plan import CONFIGS, PD_CONFIGS, REFERENCE, plan, print_plan, render_plan, resolve
    from llmd_kserve.plan.report import evaluation_line, to_json_text

    if a.json and a.json != "-":
        check_output(a.json, "json")
    base = parse_spec({"name": a.name, "namespace": a.namespace}, "render") if a.render else None
    workload, named_rate = resolve(a.workload, duration_s=a.duration, window=a.window, max_requests=a.max_requests,
                                   profile=a.profile)
    rate = a.rate or ([named_rate] if named_rate else None)
    if not rate:
        raise ConfigError("the workload names no rate: give --rate", "rate")
    to_stdout = a.json == "-"
    err = Console(stderr=True)
    show = not a.no_progress and not to_stdout
    with RunProgress(show and err.is_terminal) as bar:
        result = plan(workload, rate, slo_ttft=a.slo_ttft, slo_tpot=a.slo_tpot, attainment=a.attainment,
                      profile=a.profile, configs=CONFIGS if a.configs is None else a.configs,
                      pd_configs=PD_CONFIGS if a.pd_configs is None else a.pd_configs,
                      reference=REFERENCE if a.reference is None else a.reference, max_replicas=a.max_replicas,
                      gpus_per_replica=a.gpus_per_replica, seeds=a.seeds, num_blocks=a.num_blocks,
                      headroom=a.headroom, progress=bar if show else None,
                      on_evaluation=(lambda e: err.print(evaluation_line(e), highlight=False)) if show else None)
    if to_stdout:
        print(to_json_text(result))
    else:
        print_plan(result)
        if a.json:
            with open(a.json, "w") as f:
                f.write(to_json_text(result))
    if a.render:
        files = render_plan(result, a.render, base)
        print(f"wrote {len(files)} manifest files under {a.render}", file=sys.stderr if to_stdout else sys.stdout)
    return 0


SUBCOMMANDS = [add_plan]
