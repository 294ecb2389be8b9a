"""``llmd-kserve plan``: one-line errors, the JSON document, and manifests that validate against the CRDs."""

from __future__ import annotations

import json

import pytest
import yaml

from llmd_kserve.cli import main

pytestmark = pytest.mark.slow

FAST = ["--configs", "default", "--pd-configs", "", "--reference", "", "--no-headroom", "--no-progress"]


def _error(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("llmd-kserve plan: error:"), lines
    return lines[0]


@pytest.mark.parametrize("argv, needle", [
    (["no-such-scenario", "--rate", "3"], "unknown workload 'no-such-scenario': not a scenario"),
    (["shared-prefix"], "rate: the workload names no rate: give --rate"),
    (["shared-prefix", "--rate", "3", "--configs", "fastest"], "unknown aggregated config 'fastest'"),
    (["shared-prefix", "--rate", "3", "--pd-configs", "default"], "unknown P/D config 'default'"),
])
def test_bad_input_is_one_line(capsys, argv, needle):
    assert main(["plan", *argv]) == 2
    assert needle in _error(capsys)


def test_a_file_that_is_not_a_bench_json_is_named(tmp_path, capsys):
    bad = tmp_path / "runs.json"
    bad.write_text("[1, 2]")
    assert main(["plan", str(bad), "--rate", "3"]) == 2
    assert "not a bench JSON" in _error(capsys)


def test_unreachable_slo_says_the_best_found(capsys):
    assert main(["plan", "shared-prefix", "--rate", "20", "--slo-ttft", "0.001", "--max-replicas", "2",
                 "--duration", "4", *FAST]) == 2
    line = _error(capsys)
    assert "no deployment of up to 2 replicas meets the SLO (TTFT <= 0.001 s, TPOT <= 50 ms for 95% of requests)" in line
    assert "the closest was" in line


@pytest.fixture(scope="module")
def bench_json(tmp_path_factory):
    """A bench JSON written by ``llmd-kserve bench --sim`` (the plan reads its workload and rate)."""
    path = tmp_path_factory.mktemp("bench") / "bench.json"
    assert main(["bench", "--sim", "--engines", "1", "--rate", "6", "--num-requests", "24", "--set", "num_groups=3",
                 "--set", "system_prompt_len=1024", "--set", "question_len=32", "--set", "output_len=16",
                 "--no-progress", "--json", str(path)]) == 0
    return path


def test_json_plan_from_a_bench_json(bench_json, capsys):
    capsys.readouterr()
    assert main(["plan", str(bench_json), "--slo-ttft", "0.5", "--slo-tpot", "0.05", "--json", "--duration", "4",
                 *FAST]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["rate"] == 6.0 and doc["slo"] == {"ttft": 0.5, "tpot": 0.05, "attainment": 0.95}
    assert doc["workload_info"]["kind"] == "shared-prefix" and doc["workload_info"]["num_groups"] == 3
    p = doc["plan"]
    assert p["mode"] == "aggregated" and p["config"] == "default" and p["meets"] is True
    assert p["gpus"] == p["replicas"] == p["decode"] >= 1 and p["prefill"] == 0 and p["ratio"] is None
    assert 0 < p["ttft_p90"] <= 0.5 and 0 < p["tpot_p90"] <= 0.05  # seconds
    assert p["attainment"] >= 0.95 and p["headroom_rate"] is None
    assert doc["options"][0] == {k: v for k, v in p.items() if k in doc["options"][0]}
    keys = {"config", "mode", "replicas", "prefill", "decode", "ratio", "rate", "gpus", "attainment", "meets",
            "ttft_p90", "tpot_p90", "goodput_rps", "cache_hit_rate", "seeds", "attainment_per_seed", "stopped_early"}
    assert all(set(e) == keys for e in doc["evaluations"])
    if p["replicas"] > 1:  # the count below was simulated and missed
        assert any(e["replicas"] == p["replicas"] - 1 and not e["meets"] for e in doc["evaluations"])


def test_render_writes_manifests_that_validate(tmp_path, capsys):
    from tests.kube.conftest import validate

    out = tmp_path / "manifests"
    assert main(["plan", "rag-reasoning", "--rate", "4", "--slo-tpot", "0.009", "--max-replicas", "3",
                 "--duration", "10", "--configs", "default", "--reference", "", "--no-headroom", "--no-progress",
                 "--render", str(out), "--name", "planned", "--namespace", "ml", "--json", str(tmp_path / "p.json")]) == 0
    assert "wrote" in capsys.readouterr().out
    plan = json.loads((tmp_path / "p.json").read_text())["plan"]
    assert plan["mode"] == "pd"
    objs = [yaml.safe_load(p.read_text()) for p in sorted(out.glob("*.yaml")) if p.name != "kustomization.yaml"]
    for obj in objs:
        assert validate(obj) == [], (obj["kind"], obj["metadata"]["name"])
        assert obj["metadata"]["namespace"] == "ml"
    isvcs = {o["metadata"]["name"]: o for o in objs if o["kind"] == "InferenceService"}
    assert isvcs["planned-prefill"]["spec"]["predictor"]["minReplicas"] == plan["prefill"]
    assert isvcs["planned-decode"]["spec"]["predictor"]["minReplicas"] == plan["decode"]
    cm = next(o for o in objs if o["kind"] == "ConfigMap")
    assert "pd-profile-handler" in next(iter(cm["data"].values()))  # the plan's router config, pd-predicted-ttft
