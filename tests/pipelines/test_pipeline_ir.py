"""Every pipeline and component compiles, its IR loads back with kfp's own loader, and matches docs/pipelines.md."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from kfp import compiler, components

import pipelines
from pipelines import PIPELINES

DOCS = Path(__file__).resolve().parents[2] / "docs" / "pipelines.md"
COMPONENT_DIR = Path(pipelines.__file__).parent / "components"
COMPONENTS = sorted(p.name for p in COMPONENT_DIR.iterdir() if (p / "component.py").is_file())


def _component(name: str):
    import importlib

    return getattr(importlib.import_module(f"pipelines.components.{name}.component"), name)


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> dict[str, dict]:
    out = tmp_path_factory.mktemp("ir")
    docs = {}
    for name, fn in PIPELINES.items():
        path = out / f"{name}.yaml"
        compiler.Compiler().compile(fn, str(path))
        loaded = components.load_component_from_file(str(path))  # kfp's own loader
        assert loaded.name == fn.name
        assert set(loaded.component_spec.inputs) == set(fn.component_spec.inputs)
        docs[name] = yaml.safe_load(path.read_text())
    return docs


def test_the_five_pipelines_and_ten_components_exist():
    assert set(PIPELINES) == {"benchmark_pipeline", "tune_pipeline", "deploy_benchmark_teardown",
                              "trace_benchmark_pipeline", "plan_pipeline"}
    assert sorted(["render_manifests", "deploy", "wait_ready", "benchmark", "simulate", "tune",
                                 "confirm", "report", "teardown", "plan"]) == COMPONENTS


@pytest.mark.parametrize("name", COMPONENTS)
def test_each_component_compiles_and_loads_back(tmp_path, name):
    comp = _component(name)
    path = tmp_path / f"{name}.yaml"
    compiler.Compiler().compile(comp, str(path))
    loaded = components.load_component_from_file(str(path))
    assert set(loaded.component_spec.inputs or {}) == set(comp.component_spec.inputs or {})
    assert set(loaded.component_spec.outputs or {}) == set(comp.component_spec.outputs or {})
    ir = yaml.safe_load(path.read_text())
    (executor,) = ir["deploymentSpec"]["executors"].values()
    assert executor["container"]["image"] == pipelines.components.BASE_IMAGE
    assert "pip install" not in " ".join(executor["container"]["command"])  # the image has kfp and llmd_kserve
    assert "from llmd_kserve.steps import" in " ".join(executor["container"]["command"])


def _doc_tables() -> tuple[dict[str, dict[str, tuple[str, object]]], dict[str, dict[str, str]]]:
    """(pipeline -> {param: (IR type, default)}, component -> {artifact: schema title}) from docs/pipelines.md."""
    params: dict[str, dict[str, tuple[str, object]]] = {}
    arts: dict[str, dict[str, str]] = {}
    current = None
    for line in DOCS.read_text().splitlines():
        if m := re.match(r"^### `(\w+)`", line):
            current = m.group(1)
            params[current] = {}
        elif line.startswith("## Components"):
            current = None
        elif current and (m := re.match(r"^\| `(\w+)` \| (\w+) \| `(.*?)` \|", line)):
            params[current][m.group(1)] = (m.group(2), json.loads(m.group(3)))
        elif current is None and (m := re.match(r"^\| `(\w+)` \| `steps\.\w+` \|[^|]*\| (.*) \|$", line)):
            arts[m.group(1)] = dict(re.findall(r"`(\w+)`: (system\.\w+)", m.group(2)))
    return params, arts


def test_parameters_match_the_docs(compiled):
    doc_params, _ = _doc_tables()
    assert set(doc_params) == set(PIPELINES)
    for name, ir in compiled.items():
        actual = {k: (v["parameterType"], v.get("defaultValue"))
                  for k, v in ir["root"]["inputDefinitions"]["parameters"].items()}
        assert actual == doc_params[name], name


def test_artifact_types_match_the_docs(compiled):
    _, doc_arts = _doc_tables()
    assert set(doc_arts) == set(COMPONENTS)
    for name in COMPONENTS:
        spec = _component(name).pipeline_spec
        (comp,) = spec.components.values()
        outs = {k: v.artifact_type.schema_title for k, v in comp.output_definitions.artifacts.items()}
        assert outs == doc_arts[name], name


def test_teardown_is_the_exit_task_of_deploy_benchmark_teardown(compiled):
    ir = compiled["deploy_benchmark_teardown"]
    root = ir["root"]["dag"]["tasks"]
    assert set(root) == {"exit-handler-1", "teardown"}
    td = root["teardown"]
    assert td["triggerPolicy"]["strategy"] == "ALL_UPSTREAM_TASKS_COMPLETED"  # runs after a failure too
    assert td["dependentTasks"] == ["exit-handler-1"]
    assert td["inputs"]["parameters"]["status"] == {"taskFinalStatus": {"producerTask": "exit-handler-1"}}
    # teardown reads no output of the guarded steps: only pipeline parameters and the run's id
    sources = {k: v for k, v in td["inputs"]["parameters"].items() if k != "status"}
    assert all("taskOutputParameter" not in v for v in sources.values())
    assert sources["run_id"] == {"runtimeValue": {"constant": "{{$.pipeline_job_uuid}}"}}
    guarded = ir["components"]["comp-exit-handler-1"]["dag"]["tasks"]
    assert set(guarded) == {"render-manifests", "deploy", "wait-ready", "benchmark", "report"}
    # deploy and teardown name the local stack by the same run id
    assert guarded["deploy"]["inputs"]["parameters"]["run_id"] == sources["run_id"]
