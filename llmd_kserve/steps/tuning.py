"""Pipeline steps that tune: ``tune`` (search in the simulator, trials table, top candidates) and ``confirm``.

``tune`` writes the trials table (CSV and JSON) and the top-``k`` candidates as JSON (what ``confirm`` reads);
``confirm`` replays them and the shipped ``default`` live on the local stack, and exports the winner's config
YAML and ConfigMap manifest. A scenario is a mapping of :class:`~llmd_kserve.tune.Scenario` fields (JSON-ready, so
a pipeline parameter can carry it); errors name the bad field.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from llmd_kserve.bench.report import build_report, write_json
from llmd_kserve.errors import ConfigError
from llmd_kserve.tune import Scenario, baseline, candidate_from_params, confirm, export, search
from llmd_kserve.viz.report_page import write_html


def scenario_from(data: Mapping[str, Any] | Scenario | None) -> Scenario:
    if isinstance(data, Scenario):
        return data
    try:
        return Scenario.model_validate(dict(data or {}))
    except ValidationError as exc:
        err = exc.errors()[0]
        raise ConfigError(err["msg"], "scenario." + ".".join(str(p) for p in err["loc"])) from exc


def tune(scenario: Mapping[str, Any] | Scenario | None, trials_csv: str, trials_json: str, candidates_json: str, *,
         n_trials: int = 30, seed: int = 0, top_k: int = 2) -> dict[str, float]:
    """Search ``n_trials`` candidates in the simulator (Optuna TPE seeded with ``seed``); write the trials table and
    the ``top_k`` best candidates. Returns ``best_value``, ``baseline_value`` (the shipped ``default`` on the same
    seeds), ``improvement`` (best / baseline) and ``trials``."""
    sc = scenario_from(scenario)
    if n_trials < 1 or top_k < 1:
        raise ConfigError("n_trials and top_k must be >= 1", "n_trials")
    res = search(sc, n_trials=n_trials, seed=seed)
    res.write_csv(trials_csv)
    res.write_json(trials_json)
    best = res.best(top_k)
    Path(candidates_json).write_text(json.dumps({"scenario": sc.model_dump(mode="json"), "candidates": [
        {"name": c.name, "params": c.params} for c in best]}, indent=1))
    best_value = max(r["value"] for r in res.rows)
    base = float(res.baseline["value"])
    return {"best_value": float(best_value), "baseline_value": base, "trials": float(len(res.rows)),
            "improvement": float(best_value / base) if base > 0 else float("inf")}


def confirm_step(candidates_json: str, out_dir: str, runs_json: str, html_path: str | None = None, *,
                 include_default: bool = True, name: str = "llmd", namespace: str = "llmd",
                 time_scale: float = 1.0) -> dict[str, Any]:
    """Replay the candidates of ``candidates_json`` (plus the shipped ``default`` on the baseline cluster) live on the
    held-out seed; export the winner (``config.yaml``, ``configmap.yaml``, ``deployment-spec.yaml``) to ``out_dir``;
    write the live runs as a bench report. Returns the winner's name and each candidate's live objective."""
    try:
        doc = json.loads(Path(candidates_json).read_text())
        sc = scenario_from(doc["scenario"])
        cands = [candidate_from_params(c["params"], c["name"]) for c in doc["candidates"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"not a candidates file written by tune: {exc}", candidates_json) from exc
    if include_default:
        cands.append(baseline(sc))
    res = confirm(sc, cands, time_scale=time_scale)
    paths = export(res.winner, out_dir, name=name, namespace=namespace)
    report = build_report({"confirm": True, "scenario": sc.model_dump(mode="json"), "seed": sc.holdout_seed,
                           "winner": res.winner.name, "objective": sc.objective}, res.runs)
    write_json(report, runs_json)
    if html_path:
        write_html(report, html_path)
    values = {r["policy"]: float(r["value"]) for r in res.runs}
    return {"winner": res.winner.name, "values": values, "files": paths,
            "winner_value": values[res.winner.name],
            "default_value": values.get("default", float("nan"))}


def copy_file(src: str, dst: str) -> None:
    """Copy one exported file to an artifact path (the pipeline's outputs are single files)."""
    shutil.copyfile(src, dst)
