"""Capacity planning: the smallest deployment (replicas, aggregated or P/D and its P:D ratio, router config) that
meets a latency SLO for a workload at a target rate, found with the cluster simulator.

Public API::

    plan(workload, rate, *, slo_ttft=None, slo_tpot=None, attainment=0.95, profile="h100-llama8b",
         configs=("default", "round-robin"), pd_configs=("pd-predicted-ttft",), reference=("round-robin",),
         max_replicas=16, gpus_per_replica=1.0, seeds=(0,), num_blocks=None, headroom=True,
         progress=None, on_evaluation=None) -> Plan            raises PlanUnreachable (``.best``: the closest)
    Plan: .deployment, .best (Evaluation), .headroom_rate, .options, .evaluations, .to_json()
    Deployment(config, prefill, decode): .mode, .replicas, .ratio;  Evaluation: one deployment at one rate
    resolve(workload, ...) -> (PlanWorkload, rate or None)   a scenario name, a trace file or a bench JSON
    from_scenario(name), from_trace(path, window=, max_requests=), from_bench_json(path), from_spec(name, spec)
    frontier(workload, rate, max_replicas=...) -> [Evaluation]   every deployment up to a size, run to the end
    smallest(test, lo, hi, start), pd_frontier(test, max_replicas, cap)   the monotone searches
    print_plan(plan), options_table(plan), render_plan(plan, out_dir), plan_spec(plan)

Modules: ``workload`` (sources), ``search`` (values, the monotone searches), ``runs`` (memoised simulations),
``planner`` (``plan``), ``frontier``, ``report`` (tables), ``render`` (manifests).
"""

from llmd_kserve.plan.frontier import frontier
from llmd_kserve.plan.planner import ATTAINMENT, CONFIGS, PD_CONFIGS, REFERENCE, Plan, PlanUnreachable, plan
from llmd_kserve.plan.render import plan_spec, render_plan
from llmd_kserve.plan.report import options_table, print_plan, summary_lines
from llmd_kserve.plan.search import Deployment, Evaluation, pd_frontier, smallest
from llmd_kserve.plan.workload import (
    PlanWorkload,
    from_bench_json,
    from_scenario,
    from_spec,
    from_trace,
    resolve,
)

__all__ = ["ATTAINMENT", "CONFIGS", "PD_CONFIGS", "REFERENCE", "Deployment", "Evaluation", "Plan", "PlanUnreachable",
           "PlanWorkload", "from_bench_json", "from_scenario", "from_spec", "from_trace", "frontier", "options_table",
           "pd_frontier", "plan", "plan_spec", "print_plan", "render_plan", "resolve", "smallest", "summary_lines"]
