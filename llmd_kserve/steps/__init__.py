"""What each Kubeflow pipeline component calls: one public function per step, plain values and file paths in and out.

Public API (every function usable from a notebook as well)::

    render_manifests(out_dir, spec=None, mode="sim") -> [files]                          cluster.py
    deploy(target="local"|"kserve", ...) -> handle; wait_ready(handle) -> handle + router_url
    teardown(target, name=, namespace=, state_dir=, run_id=) -> [removed]
    benchmark(target=URL|"local"|"sim", json_path, html_path, ...) -> headline metrics    bench.py
    simulate(json_path, html_path, ...) -> headline metrics
    tune(scenario, trials_csv, trials_json, candidates_json, n_trials, seed, top_k) -> metrics   tuning.py
    confirm_step(candidates_json, out_dir, runs_json, html_path) -> winner, values, files
    report(bench_jsons, html_path, markdown_path) -> metrics                               report.py
    capacity_plan(workload, plan_json, manifests_dir, rate, slo_ttft, ...) -> metrics   planning.py

The components in ``pipelines/components/<name>/component.py`` are thin wrappers of these.
"""

from llmd_kserve.steps.bench import HEADLINE, benchmark, headline, simulate
from llmd_kserve.steps.cluster import TARGETS, deploy, render_manifests, teardown, wait_ready
from llmd_kserve.steps.planning import capacity_plan
from llmd_kserve.steps.report import markdown, report
from llmd_kserve.steps.tuning import confirm_step, copy_file, scenario_from, tune

__all__ = ["HEADLINE", "TARGETS", "benchmark", "capacity_plan", "confirm_step", "copy_file", "deploy", "headline", "markdown",
           "render_manifests", "report", "scenario_from", "simulate", "teardown", "tune", "wait_ready"]
