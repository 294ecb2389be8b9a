"""The committed manifests/ tree: a golden snapshot of a fresh render, valid, and what kustomize builds per mode."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from llmd_kserve.cli import main
from llmd_kserve.kube.render import AUTOSCALE_OVERLAYS, autoscaled, render, render_llmisvc
from llmd_kserve.kube.spec import MODES, DeploymentSpec

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "manifests"


def tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*.yaml"))}


def key(obj):
    return obj["kind"], obj["metadata"]["name"]


def test_committed_manifests_equal_a_fresh_render(tmp_path):
    assert main(["render", "--out", str(tmp_path)]) == 0
    fresh, committed = tree(tmp_path), tree(MANIFESTS)
    assert sorted(fresh) == sorted(committed), "file set differs: run `llmd-kserve render --out manifests`"
    for name, text in fresh.items():
        assert committed[name] == text, f"{name} is stale: run `llmd-kserve render --out manifests`"


def test_every_committed_manifest_validates(k8s_validate):
    seen = 0
    for path in MANIFESTS.rglob("*.yaml"):
        if path.name == "kustomization.yaml":
            continue
        obj = yaml.safe_load(path.read_text())
        assert k8s_validate(obj) == [], path
        seen += 1
    assert seen == 45  # 4 base + 5 sim + 4 aggregated + 5 pd (each its router config) + 2 LLMInferenceService
    #                    + 11 gateway (EPP config, RBAC x3, Deployment, Service, runtime, pool ISVC, InferencePool, Gateway, HTTPRoute)
    #                    + 7 autoscale (pd + 2 ScaledObjects) + 5 autoscale-aggregated (+ 1) + 2 LLMInferenceService


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (with built-in kustomize) not installed")
@pytest.mark.parametrize("mode", MODES)
def test_kustomize_overlay_builds_exactly_the_mode(mode):
    out = subprocess.run(["kubectl", "kustomize", str(MANIFESTS / "overlays" / mode)], check=True,
                         capture_output=True, text=True).stdout
    built = sorted((o for o in yaml.safe_load_all(out) if o), key=key)
    assert built == sorted(render(DeploymentSpec(mode=mode)), key=key)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (with built-in kustomize) not installed")
@pytest.mark.parametrize("overlay", sorted(AUTOSCALE_OVERLAYS))
def test_kustomize_autoscale_overlay_builds_exactly_the_autoscaled_mode(overlay):
    out = subprocess.run(["kubectl", "kustomize", str(MANIFESTS / "overlays" / overlay)], check=True,
                         capture_output=True, text=True).stdout
    built = sorted((o for o in yaml.safe_load_all(out) if o), key=key)
    assert built == sorted(render(autoscaled(DeploymentSpec(mode=AUTOSCALE_OVERLAYS[overlay]))), key=key)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (with built-in kustomize) not installed")
def test_kustomize_llminferenceservice_builds():
    out = subprocess.run(["kubectl", "kustomize", str(MANIFESTS / "llminferenceservice")], check=True,
                         capture_output=True, text=True).stdout
    built = sorted((o for o in yaml.safe_load_all(out) if o), key=key)
    assert built == sorted(render_llmisvc(DeploymentSpec(mode="pd")), key=key)


def test_render_one_mode_from_a_spec_file(tmp_path):
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text("name: demo\nnamespace: team-a\ndecode: {replicas: 3}\n")
    out = tmp_path / "out"
    assert main(["render", "--out", str(out), "--mode", "aggregated", "--spec", str(spec_file)]) == 0
    objs = [yaml.safe_load(p.read_text()) for p in sorted(out.glob("*.yaml")) if p.name != "kustomization.yaml"]
    assert {o["metadata"]["namespace"] for o in objs} == {"team-a"}
    engine = next(o for o in objs if key(o) == ("InferenceService", "demo-engine"))
    assert engine["spec"]["predictor"]["minReplicas"] == 3
    listed = yaml.safe_load((out / "kustomization.yaml").read_text())["resources"]
    assert sorted(listed) == sorted(p.name for p in out.glob("*.yaml") if p.name != "kustomization.yaml")
    # a re-render removes files an earlier render wrote but this one does not
    (out / "inferenceservice-old.yaml").write_text((out / listed[0]).read_text())
    assert main(["render", "--out", str(out), "--mode", "pd", "--spec", str(spec_file)]) == 0
    assert not (out / "inferenceservice-old.yaml").exists()
    assert not (out / "inferenceservice-demo-engine.yaml").exists()
    assert (out / "inferenceservice-demo-prefill.yaml").exists()


def test_render_reports_a_bad_spec_in_one_line(tmp_path, capsys):
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text("mode: turbo\n")
    assert main(["render", "--out", str(tmp_path / "o"), "--spec", str(spec_file)]) == 2
    err = capsys.readouterr().err
    assert "mode" in err and len(err.strip().splitlines()) == 1
