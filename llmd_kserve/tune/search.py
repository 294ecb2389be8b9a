"""The search: Optuna's seeded TPE sampler over the space, each trial scored in the cluster simulator; the trials table.

``evaluate(scenario, candidate, seed)`` runs one candidate on one workload seed in virtual time and returns its
bench ``runs[]`` item plus the objective. ``search(scenario, n_trials, seed)`` runs the study (``optuna`` is the
``pipelines`` extra, imported here only) and returns a :class:`SearchResult`: one row per trial (parameters,
objective, TTFT p50/p90, TPOT p50, goodput, hit rate, GPUs) and the best candidates. Same scenario and seed: same
trials, same table (the simulator and the sampler are both seeded).
"""

from __future__ import annotations

import csv
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmd_kserve.cluster_sim import SimOptions, sim_entry, simulate
from llmd_kserve.config.loader import parse_config
from llmd_kserve.tune.scenario import Scenario, score
from llmd_kserve.tune.space import Candidate, baseline, candidate_from_params, suggest

log = logging.getLogger(__name__)

METRIC_COLUMNS = ("value", "gpus", "ttft_p50", "ttft_p90", "tpot_p50", "goodput_rps", "slo_attainment",
                  "cache_hit_rate")


def evaluate(scenario: Scenario, candidate: Candidate, seed: int) -> dict[str, Any]:
    """One simulated run of ``candidate`` on the requests of ``seed``: a bench ``runs[]`` item with ``value`` added."""
    opts = SimOptions(engines=candidate.engines, roles=candidate.roles, num_blocks=scenario.num_blocks, seed=seed)
    config = parse_config(candidate.config, candidate.name)
    run = simulate(scenario.requests(seed), config, opts, scenario.arrival)
    entry = sim_entry(run, candidate.name, scenario.slo, scale="sim", engines=candidate.engines,
                      prefill=candidate.prefill, seed=seed)
    entry["value"] = score(entry["summary"], candidate.gpus(scenario), scenario.objective)
    return entry


def mean_metrics(entries: Sequence[dict[str, Any]], gpus: float) -> dict[str, float | None]:
    """The table's metric columns, averaged over runs (one per seed)."""
    def avg(key: str) -> float | None:
        xs = [e["summary"].get(key) for e in entries]
        xs = [x for x in xs if x is not None]
        return sum(xs) / len(xs) if xs else None

    out: dict[str, float | None] = {k: avg(k) for k in METRIC_COLUMNS if k not in ("value", "gpus")}
    out["value"] = sum(e["value"] for e in entries) / len(entries)
    out["gpus"] = gpus
    return out


@dataclass(frozen=True, slots=True)
class SearchResult:
    """The trials table (``rows``: trial, state, parameters, metrics) and the baseline's row on the same seeds."""

    scenario: Scenario
    rows: list[dict[str, Any]]
    baseline: dict[str, Any]
    wall_s: float

    def best(self, k: int = 1) -> list[Candidate]:
        """The ``k`` best complete trials by objective, as candidates (ties: the earlier trial)."""
        done = [r for r in self.rows if r["state"] == "COMPLETE"]
        done.sort(key=lambda r: (-r["value"], r["trial"]))
        return [candidate_from_params(r["params"], f"trial-{r['trial']}") for r in done[:k]]

    def to_json(self) -> dict[str, Any]:
        return {"scenario": self.scenario.model_dump(mode="json"), "objective": self.scenario.objective,
                "baseline": self.baseline, "trials": self.rows, "wall_s": self.wall_s}

    def write_csv(self, path: str | Path) -> None:
        """One line per trial: trial, state, every parameter, every metric column."""
        params = sorted({k for r in self.rows for k in r["params"]})
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["trial", "state", *params, *METRIC_COLUMNS])
            for r in self.rows:
                w.writerow([r["trial"], r["state"], *(_fmt(r["params"].get(p)) for p in params),
                            *(_fmt(r.get(m)) for m in METRIC_COLUMNS)])

    def write_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=1))


def _fmt(v: Any) -> Any:
    return round(v, 6) if isinstance(v, float) else ("" if v is None else v)


def search(scenario: Scenario, n_trials: int = 40, seed: int = 0, *, include_baseline: bool = True,
           progress: Callable[[dict[str, Any]], None] | None = None) -> SearchResult:
    """Run ``n_trials`` of Optuna's TPE sampler (seeded with ``seed``) on ``scenario``; the first trial is the shipped
    ``default`` (enqueued, so the search starts from it) when ``include_baseline``."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    t0 = time.perf_counter()
    base = baseline(scenario)
    base_runs = [evaluate(scenario, base, s) for s in scenario.seeds]
    base_row = {"trial": -1, "state": "COMPLETE", "params": {"config": "default", "engines": base.engines,
                                                             "prefill": 0}} | mean_metrics(base_runs,
                                                                                           base.gpus(scenario))
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(10, max(1, n_trials // 3)))
    study = optuna.create_study(direction="maximize", sampler=sampler)
    if include_baseline:
        study.enqueue_trial(default_params(scenario))
    rows: list[dict[str, Any]] = []

    def objective(trial: optuna.Trial) -> float:
        cand = suggest(trial, scenario)
        runs = [evaluate(scenario, cand, s) for s in scenario.seeds]
        row = {"trial": trial.number, "state": "COMPLETE", "params": dict(cand.params)} | mean_metrics(
            runs, cand.gpus(scenario))
        rows.append(row)
        if progress is not None:
            progress(row)
        return float(row["value"])

    study.optimize(objective, n_trials=n_trials)
    return SearchResult(scenario, rows, base_row, round(time.perf_counter() - t0, 2))


def default_params(scenario: Scenario) -> dict[str, Any]:
    """The shipped ``default``'s values in the space's terms (on the baseline cluster, aggregated)."""
    params: dict[str, Any] = {"engines": min(max(scenario.engines, scenario.min_engines), scenario.max_engines),
                              "w_prefix": 2.0, "w_ttft": 3.0, "w_queue": 1.0, "w_kv": 1.0, "affinity_threshold": 0.5,
                              "affinity_margin": 0.5, "affinity_min_margin_s": 0.05}
    if scenario.max_prefill > 0:
        params["prefill"] = 0
    return params
