"""The notebooks: committed without outputs, and each executes headless (nbclient) against the local stack of
simulated engines, with the numbers behind its figures asserted (printed by the notebook as ``NUMBERS {json}``).

The quickstart runs on real vLLM when a vLLM environment is found; here it is pinned to the simulated engines
(``LLMD_NOTEBOOK_ENGINE=sim``: seconds, not the minutes of starting vLLM), and the ``real_vllm`` tier executes it once
on real vLLM replicas."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
WITH_NUMBERS = [p for p in NOTEBOOKS if p.stem != "06_pipelines"]
"""06_pipelines runs a kfp.local pipeline: tests/pipelines/test_notebook.py executes it."""
PLOTLY = "application/vnd.plotly.v1+json"
WIDGET = "application/vnd.jupyter.widget-view+json"


def test_the_notebooks_exist_and_are_stripped():
    assert [p.stem for p in NOTEBOOKS] == ["01_quickstart", "02_compare_policies", "03_tune_router",
                                           "04_pd_disaggregation", "05_deploy_to_kserve", "06_pipelines",
                                           "07_capacity_planning"]
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        for i, cell in enumerate(nb.cells):
            if cell.cell_type == "code":
                assert cell.outputs == [], f"{path.name} cell {i} has outputs: strip them (nbstripout)"
                assert cell.execution_count is None, f"{path.name} cell {i} has an execution count"
        assert "widgets" not in nb.metadata, f"{path.name} stores widget state"


def _execute(path: Path, cwd: Path, env: dict[str, str] | None = None, timeout: int = 240) -> tuple[dict, list[str]]:
    """Run the notebook in a kernel that imports this tree and sees ``env`` (default: the simulated engines)."""
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    env_path = os.environ.get("PYTHONPATH", "")
    extra = {"LLMD_NOTEBOOK_ENGINE": "sim"} if env is None else env
    saved = {k: os.environ.get(k) for k in extra}
    os.environ["PYTHONPATH"] = f"{ROOT}{os.pathsep}{env_path}" if env_path else str(ROOT)  # the kernel imports this tree
    os.environ.update(extra)
    try:
        NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}).execute()
    finally:
        os.environ["PYTHONPATH"] = env_path
        if not env_path:
            del os.environ["PYTHONPATH"]
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    mimes, numbers = [], None
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            assert out.output_type != "error", f"{path.name}: {out.get('ename')}: {out.get('evalue')}"
            mimes += list(out.get("data", {}))
            for line in out.get("text", "").splitlines():
                if line.startswith("NUMBERS "):
                    numbers = json.loads(line[len("NUMBERS "):])
    assert numbers is not None, f"{path.name} printed no NUMBERS line"
    return numbers, mimes


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("path", WITH_NUMBERS, ids=[p.stem for p in WITH_NUMBERS])
def test_notebook_executes_and_its_numbers_hold(path, tmp_path):
    numbers, mimes = _execute(path, tmp_path)
    check = CHECKS[path.stem]
    check(numbers, mimes, tmp_path)


@pytest.mark.slow
@pytest.mark.real_vllm
@pytest.mark.timeout(900)
def test_the_quickstart_runs_on_real_vllm(tmp_path):
    """The quickstart's default: real vLLM replicas of the tiny model when the vLLM environment is there."""
    pytest.importorskip("tokenizers", reason="the tiny model needs the 'hf' extra")
    from llmd_kserve.vllm_env import VllmEnvMissing, find_vllm_env

    try:
        python = find_vllm_env(python=os.environ.get("LLMD_VLLM_PYTHON") or None, start=ROOT).python
    except VllmEnvMissing as exc:
        pytest.skip(f"real vLLM tier: {exc}")
    path = ROOT / "notebooks" / "01_quickstart.ipynb"
    numbers, mimes = _execute(path, tmp_path, {"LLMD_NOTEBOOK_ENGINE": "", "LLMD_VLLM_PYTHON": str(python)}, 600)
    assert numbers["engine"] == "vllm"
    _quickstart(numbers, mimes, tmp_path)
    assert numbers["engines_hit_rate"] > 0.5  # 32 chats over 4 long system prompts: the engines reuse them


def _quickstart(n: dict, mimes: list[str], _: Path) -> None:
    assert PLOTLY in mimes and mimes.count(WIDGET) >= 2  # the panels and a static figure
    assert n["refreshes"] >= 2
    assert abs(n["dashboard_hit_rate"] - n["engines_hit_rate"]) <= 0.02  # the dashboard = the engines' counters
    assert 0.0 <= n["router_predicted_hit_rate"] <= 1.0
    assert n["decision_totals"].keys() == n["decision_logged_totals"].keys()
    for ep, total in n["decision_totals"].items():
        assert total == pytest.approx(n["decision_logged_totals"][ep], abs=1e-9)  # Σ weight·score = logged total


def _compare(n: dict, mimes: list[str], _: Path) -> None:
    assert mimes.count(PLOTLY) >= 6
    rows = n["rows"]
    goodput = n["goodput_figure"]
    for policy in ("round-robin", "load-only", "precise-prefix", "default"):
        ys = goodput[f"{policy} · sim"]
        assert ys == pytest.approx([rows[f"{policy} · sim @{r}"]["goodput"] for r in (15, 30, 60)])
    # the simulator is seeded: cache-aware routing beats cache-blind at the middle rate, by goodput and TTFT
    assert rows["default · sim @30"]["goodput"] > 2 * rows["round-robin · sim @30"]["goodput"]
    assert rows["default · sim @30"]["ttft_p90"] < rows["round-robin · sim @30"]["ttft_p90"]
    assert {"round-robin · live @8", "default · live @8"} <= rows.keys()


def _tune(n: dict, mimes: list[str], cwd: Path) -> None:
    assert PLOTLY in mimes
    assert (cwd / "tuned-config" / "configmap.yaml").is_file()
    assert n["before_ttft_p90"] > 0 and n["after_ttft_p90"] > 0 and all(v > 0 for v in n["sim"])
    if n["applied"] is None:  # a router without POST /admin/config (before config reload exists): one line, no crash
        assert "no admin/config endpoint" in n["apply_status"] and "\n" not in n["apply_status"]
        return
    assert n["applied"]["status"] == "applied"
    assert n["logged_weights"] and n["logged_weights"] == n["tuned_weights"]  # the router logs the tuned weights
    assert n["logged_weights"]["default/precise-prefix-cache-scorer"] == 4.0
    for ep, total in n["tuned_totals"].items():  # decisions after Apply are explained by the tuned weights
        assert total == pytest.approx(n["logged_totals"][ep], abs=1e-9)


def _pd(n: dict, mimes: list[str], _: Path) -> None:
    assert mimes.count(PLOTLY) >= 3
    why = n["why"]
    remote = [w for w in why if w["remote_prefill"]]
    assert remote and len(remote) < len(why)
    assert all(w["uncached"] > 512 for w in remote) and all(w["uncached"] <= 512 for w in why if w not in remote)
    assert n["pd_share_live"] == pytest.approx(len(remote) / len(why))  # the dashboard's share = the decisions'
    assert all(0.0 < s <= 1.0 for s in n["sim_share"].values())


def _kserve(n: dict, mimes: list[str], _: Path) -> None:
    assert WIDGET in mimes
    assert n["ready"] and n["objects"] == 9 and n["router_url"].startswith("http://llmd-router")
    if n["fake"]:
        assert n["torn_down"] == 9


def _planning(n: dict, mimes: list[str], cwd: Path) -> None:
    assert PLOTLY in mimes
    plan = n["plan"]
    assert plan["meets"] and plan["attainment"] >= 0.95
    assert plan["gpus"] == n["cheapest_meeting"]  # no point of the frontier is cheaper and meets the SLO
    same = [e for e in n["frontier"] if (e["config"], e["prefill"], e["decode"]) ==
            (plan["config"], plan["prefill"], plan["decode"])]
    assert same and same[0]["attainment"] == plan["attainment"]  # the simulator is seeded: the same run
    assert {"aggregated", "pd"} == {e["mode"] for e in n["frontier"]}
    assert any(f.startswith("inferenceservice-") for f in n["files"])
    assert (cwd / "planned-manifests" / "kustomization.yaml").is_file()


CHECKS = {"01_quickstart": _quickstart, "02_compare_policies": _compare, "03_tune_router": _tune,
          "04_pd_disaggregation": _pd, "05_deploy_to_kserve": _kserve, "07_capacity_planning": _planning}
