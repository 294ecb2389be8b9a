import csv
import json
from pathlib import Path

import pytest
from kfp import dsl

from llmd_kserve.errors import ConfigError
from pipelines.components._testing import artifact, interface
from pipelines.components.tune.component import tune

TINY = {"workload": {"kind": "shared-prefix", "num_groups": 4, "prompts_per_group": 6, "system_prompt_len": 1024,
                     "question_len": 32, "output_len": 8},
        "num_requests": 24, "rate": 6.0, "num_blocks": 256, "engines": 2, "min_engines": 1, "max_engines": 2}


def test_interface():
    params, _, outs = interface(tune)
    assert outs == {"trials": "system.Dataset", "trials_json": "system.Dataset", "candidates": "system.Artifact",
                    "metrics": "system.Metrics"}
    assert params == {"scenario": "STRUCT", "n_trials": "NUMBER_INTEGER", "seed": "NUMBER_INTEGER",
                      "top_k": "NUMBER_INTEGER"}


def _outs(tmp_path):
    return {k: artifact(t, tmp_path, k) for k, t in (("trials", dsl.Dataset), ("trials_json", dsl.Dataset),
                                                     ("candidates", dsl.Artifact), ("metrics", dsl.Metrics))}


def test_trials_table_candidates_and_metrics(tmp_path):
    outs = _outs(tmp_path)
    tune.python_func(**outs, scenario=TINY, n_trials=4, seed=3, top_k=2)
    rows = list(csv.DictReader(Path(outs["trials"].path).read_text().splitlines()))
    assert [r["trial"] for r in rows] == ["0", "1", "2", "3"]
    assert all(float(r["value"]) >= 0 and r["engines"] in ("1", "2") for r in rows)
    cands = json.loads(Path(outs["candidates"].path).read_text())["candidates"]
    assert len(cands) == 2 and cands[0]["params"]["engines"] in (1, 2)
    m = outs["metrics"].metadata
    assert m["trials"] == 4 and m["best_value"] >= m["baseline_value"] * 0.999  # trial 0 is the default itself
    assert json.loads(Path(outs["trials_json"].path).read_text())["trials"][0]["params"]["w_prefix"] == 2.0


def test_same_seed_same_trials(tmp_path):
    a, b = _outs(tmp_path / "a"), _outs(tmp_path / "b")
    for outs in (a, b):
        (tmp_path / ("a" if outs is a else "b")).mkdir()
        tune.python_func(**outs, scenario=TINY, n_trials=3, seed=7, top_k=1)
    assert Path(a["trials"].path).read_text() == Path(b["trials"].path).read_text()


def test_bad_scenario_field_is_named(tmp_path):
    with pytest.raises(ConfigError, match="scenario.ratez"):
        tune.python_func(**_outs(tmp_path), scenario={"ratez": 1}, n_trials=1, seed=0, top_k=1)
