from pathlib import Path

import yaml
from kfp import dsl

from pipelines.components._testing import artifact, interface
from pipelines.components.render_manifests.component import render_manifests


def test_interface():
    params, _, outs = interface(render_manifests)
    assert params == {"spec": "STRING", "mode": "STRING"}
    assert outs == {"manifests": "system.Artifact"}


def test_renders_a_kustomize_dir_from_spec_text(tmp_path: Path):
    out = artifact(dsl.Artifact, tmp_path, "manifests")
    n = render_manifests.python_func(manifests=out, spec="name: demo\nnamespace: team-a\n", mode="aggregated")
    files = sorted(Path(out.path).iterdir())
    assert n == len(files) > 3
    kinds = {d["kind"] for f in files if f.suffix == ".yaml" for d in yaml.safe_load_all(f.read_text()) if d}
    assert {"ServingRuntime", "InferenceService", "ConfigMap"} <= kinds
    docs = [d for f in files if f.name != "kustomization.yaml" for d in yaml.safe_load_all(f.read_text()) if d]
    assert {d["metadata"]["namespace"] for d in docs if "metadata" in d} == {"team-a"}
