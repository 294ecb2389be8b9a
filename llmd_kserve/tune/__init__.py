"""Tuning the router and the cluster shape: Optuna search in the simulator, live confirmation, config export.

Public API::

    Scenario(workload, num_requests, rate, num_blocks, engines, min_engines, max_engines, max_prefill, slo_ttft,
             slo_tpot, objective="goodput_per_gpu", seeds=(0,), holdout_seed=1)       what a candidate is scored on
    Candidate(name, config, engines, prefill, params)          a scheduler config + replica counts + P:D split
    baseline(scenario, config="default"), candidate_from_params(params)
    evaluate(scenario, candidate, seed) -> runs[] item         one simulated run, ``value`` = the objective
    search(scenario, n_trials, seed) -> SearchResult           Optuna TPE (seeded); ``.rows`` is the trials table,
                                                               ``.best(k)``, ``.write_csv``, ``.write_json``
    confirm(scenario, candidates, seed=None) -> ConfirmResult  live replays on the local stack; ``.winner``
    export(candidate, out_dir, name, namespace) -> paths       config.yaml, configmap.yaml, deployment-spec.yaml

Modules: ``scenario``, ``space``, ``search``, ``confirm``, ``export``. ``optuna`` (the ``pipelines`` extra) is
imported by ``search`` only when a search runs.
"""

from llmd_kserve.tune.confirm import ConfirmResult, confirm, run_live
from llmd_kserve.tune.export import deployment_spec, export
from llmd_kserve.tune.scenario import OBJECTIVES, Scenario, score
from llmd_kserve.tune.search import SearchResult, evaluate, search
from llmd_kserve.tune.space import Candidate, baseline, candidate_from_params, suggest

__all__ = ["OBJECTIVES", "Candidate", "ConfirmResult", "Scenario", "SearchResult", "baseline",
           "candidate_from_params", "confirm", "deployment_spec", "evaluate", "export", "run_live", "score", "search",
           "suggest"]
