"""llmd_kserve.tune: the space builds valid configs (aggregated and P/D), the search is seeded, export round-trips."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from llmd_kserve.config.loader import parse_config
from llmd_kserve.errors import ConfigError
from llmd_kserve.kube.render import render
from llmd_kserve.kube.spec import parse_spec
from llmd_kserve.tune import Scenario, baseline, candidate_from_params, evaluate, export, search
from llmd_kserve.tune.search import default_params

TINY = Scenario(workload={"kind": "shared-prefix", "num_groups": 4, "prompts_per_group": 6, "system_prompt_len": 1024,
                          "question_len": 32, "output_len": 8},
                num_requests=24, rate=6.0, num_blocks=256, engines=3, min_engines=2, max_engines=3, max_prefill=1)


def test_default_params_rebuild_the_shipped_default():
    p = dict(default_params(TINY))
    cand = candidate_from_params(p)
    base = baseline(TINY)
    assert parse_config(cand.config) == parse_config(base.config)


def test_pd_candidate_has_the_decider_thresholds():
    p = dict(default_params(TINY), prefill=1, max_local_step_s=0.02, remote_ttft_budget_s=0.3)
    cand = candidate_from_params(p)
    assert cand.roles == ("prefill", "decode", "decode")
    handler = cand.config["plugins"][0]
    assert handler["parameters"]["deciderParameters"] == {"maxLocalStepS": 0.02, "remoteTtftBudgetS": 0.3}
    entry = evaluate(TINY, cand, seed=0)
    assert entry["summary"]["n"] == 24 and entry["engine_counters"]["disaggregated"] >= 0
    assert entry["value"] == pytest.approx(entry["summary"]["goodput_rps"] / 3)


def test_out_of_range_parameter_is_a_config_error():
    with pytest.raises(ConfigError, match="threshold"):
        candidate_from_params(dict(default_params(TINY), affinity_threshold=1.5))


def test_scenario_rejects_impossible_splits():
    with pytest.raises(ValueError, match="max_prefill"):
        Scenario(max_engines=2, max_prefill=2)


def test_search_explores_the_pd_split_and_is_seeded():
    a = search(TINY, n_trials=6, seed=11)
    b = search(TINY, n_trials=6, seed=11)
    assert [r["params"] for r in a.rows] == [r["params"] for r in b.rows]
    assert [r["value"] for r in a.rows] == [r["value"] for r in b.rows]
    assert a.rows[0]["params"] == default_params(TINY)  # the search starts from the shipped default
    assert {r["params"]["engines"] for r in a.rows} <= {2, 3}
    assert all(("max_local_step_s" in r["params"]) == bool(r["params"]["prefill"]) for r in a.rows)
    best = a.best(1)[0]
    assert max(r["value"] for r in a.rows) == next(r["value"] for r in a.rows if f"trial-{r['trial']}" == best.name)


def test_export_writes_config_configmap_and_spec(tmp_path):
    cand = candidate_from_params(dict(default_params(TINY), engines=2, w_prefix=4.0), "trial-7")
    paths = export(cand, tmp_path, name="tuned", namespace="ml")
    config = yaml.safe_load(Path(paths["config"]).read_text())
    assert config == cand.config
    cm = yaml.safe_load(Path(paths["configmap"]).read_text())
    assert cm["metadata"]["name"] == "tuned-router-config" and cm["metadata"]["namespace"] == "ml"
    assert yaml.safe_load(cm["data"]["config.yaml"]) == config
    spec = parse_spec(yaml.safe_load(Path(paths["spec"]).read_text()))
    assert spec.mode == "aggregated" and spec.decode.replicas == 2
    rendered = {o["kind"]: o for o in render(spec)}
    assert rendered["ConfigMap"]["data"] == cm["data"]  # the deployment spec renders the same ConfigMap
