"""The Kubeflow pipelines from the command line: list, validate parameters, compile, run locally, submit.

The pipelines themselves live in the source tree's ``pipelines/`` package (components and pipelines, the layout of
Kubeflow's ``pipelines-components``); :func:`load_pipelines` imports it (from an installed wheel, or from the
checkout this package sits in). ``kfp`` is imported only here and only when used.

Public API::

    load_pipelines() -> {name: pipeline}
    parameters(name) -> [Param(name, type, default)]         the pipeline's typed inputs
    parse_params(name, ["k=v", ...]) -> dict                  validated and converted; ConfigError on a bad one
    compile_pipelines(names, out_dir) -> [paths]              IR YAML, one file per pipeline
    run_local(name, params, pipeline_root) -> LocalRun        kfp.local SubprocessRunner, this interpreter
    submit(name, params, host, experiment=None) -> run id     kfp.Client; LlmdError when the host is unreachable
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from llmd_kserve.errors import ConfigError, LlmdError

log = logging.getLogger(__name__)

_ROOT = Path(__file__).resolve().parent.parent
"""The source checkout (or site-packages) that holds ``llmd_kserve`` and, from a checkout, ``pipelines``."""


@dataclass(frozen=True, slots=True)
class Param:
    name: str
    type: str
    """kfp's parameter type: String, Integer, Float, Boolean, Dict or List."""
    default: Any
    optional: bool


def load_pipelines() -> dict[str, Any]:
    """``pipelines.PIPELINES``; LlmdError when kfp (the ``pipelines`` extra) or the ``pipelines`` package is missing."""
    try:
        import kfp  # noqa: F401
    except ImportError as exc:
        raise LlmdError("kfp is not installed: pip install 'llmd-kserve[pipelines]'") from exc
    try:
        import pipelines
    except ImportError:
        if not (_ROOT / "pipelines" / "__init__.py").is_file():
            raise LlmdError(f"the pipelines package is not installed and not in {_ROOT}") from None
        sys.path.insert(0, str(_ROOT))
        import pipelines
    return dict(pipelines.PIPELINES)


def _get(name: str) -> Any:
    found = load_pipelines()
    if name not in found:
        raise ConfigError(f"unknown pipeline {name!r}; known: {', '.join(found)}", "pipeline")
    return found[name]


def parameters(name: str) -> list[Param]:
    """The pipeline's typed inputs with their defaults, in declaration order."""
    spec = _get(name).component_spec
    return [Param(k, str(v.type), v.default, bool(v.optional)) for k, v in (spec.inputs or {}).items()]


def _convert(p: Param, raw: str) -> Any:
    try:
        if p.type == "Integer":
            return int(raw)
        if p.type in ("Float", "Double"):
            return float(raw)
        if p.type == "Boolean":
            low = raw.strip().lower()
            if low not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError("expected true or false")
            return low in ("true", "1", "yes")
        if p.type in ("Dict", "List", "Struct"):
            value = yaml.safe_load(raw) if raw.strip() else ({} if p.type != "List" else [])
            want = list if p.type == "List" else dict
            if not isinstance(value, want):
                raise ValueError(f"expected a JSON {'object' if want is dict else 'array'}")
            return value
    except (ValueError, yaml.YAMLError) as exc:
        raise ConfigError(f"{p.name}={raw!r} is not a valid {p.type}: {str(exc).splitlines()[0]}",
                          f"--param {p.name}") from None
    return raw


def parse_params(name: str, items: Sequence[str] | None) -> dict[str, Any]:
    """``["rate=8", "sweep=[2,4]"]`` -> typed arguments of pipeline ``name``; unknown keys and bad values raise."""
    known = {p.name: p for p in parameters(name)}
    out: dict[str, Any] = {}
    for item in items or ():
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"expected KEY=VALUE, got {item!r}", "--param")
        if key not in known:
            raise ConfigError(f"unknown parameter {key!r} for {name}; known: {', '.join(known)}", "--param")
        out[key] = _convert(known[key], raw)
    return out


def compile_pipelines(names: Sequence[str], out_dir: str | Path) -> list[str]:
    """Compile each pipeline to ``<out_dir>/<name>.yaml`` (KFP IR); returns the paths."""
    from kfp import compiler

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in names:
        path = out / f"{name}.yaml"
        compiler.Compiler().compile(_get(name), str(path))
        paths.append(str(path))
    return paths


@dataclass(frozen=True, slots=True)
class LocalRun:
    """A finished local run: its directory under the pipeline root and each task's outputs."""

    run_dir: str
    tasks: dict[str, dict[str, Any]]
    """task -> {"parameters": {name: value}, "artifacts": {name: {"uri", "metadata"}}} from executor_output.json."""

    def metrics(self) -> dict[str, dict[str, float]]:
        """task -> the metadata of its ``metrics`` artifact (the logged metrics)."""
        return {t: o["artifacts"]["metrics"]["metadata"] for t, o in self.tasks.items()
                if "metrics" in o.get("artifacts", {})}


def _read_run(run_dir: Path) -> dict[str, dict[str, Any]]:
    tasks: dict[str, dict[str, Any]] = {}
    for out in sorted(run_dir.glob("*/executor_output.json")):
        doc = json.loads(out.read_text())
        arts = {name: {"uri": a["artifacts"][0].get("uri"), "metadata": a["artifacts"][0].get("metadata", {})}
                for name, a in (doc.get("artifacts") or {}).items() if a.get("artifacts")}
        tasks[out.parent.name] = {"parameters": doc.get("parameterValues", {}), "artifacts": arts}
    return tasks


def run_local(name: str, params: dict[str, Any] | None = None, pipeline_root: str | Path = "kfp-runs") -> LocalRun:
    """Run pipeline ``name`` with kfp.local's SubprocessRunner in this interpreter (``use_venv=False``: the
    components import this very ``llmd_kserve``, whose directory is put on the subprocesses' PYTHONPATH)."""
    from kfp import local

    pipeline = _get(name)
    root = Path(pipeline_root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    paths = [str(_ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    before = set(root.iterdir())
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root), raise_on_error=False)
    t0 = time.perf_counter()
    with warnings.catch_warnings():  # "non-Python base image": ours is Python, with this package and kfp
        warnings.filterwarnings("ignore", message="You may be attemping", category=RuntimeWarning)
        pipeline(**(params or {}))
    new = sorted((p for p in root.iterdir() if p not in before and p.is_dir()), key=lambda p: p.stat().st_mtime)
    if not new:
        raise LlmdError(f"{name} produced no run directory under {root}")
    run = LocalRun(str(new[-1]), _read_run(new[-1]))
    log.info("%s ran locally in %.1fs: %s", name, time.perf_counter() - t0, run.run_dir)
    return run


def failed_tasks(run: LocalRun, name: str) -> list[str]:
    """Tasks of the pipeline that left no executor output (they failed or were skipped); importers write none."""
    spec = _get(name).pipeline_spec
    dags = [spec.root.dag, *(c.dag for c in spec.components.values() if c.dag.tasks)]
    expected = {k for dag in dags for k, t in dag.tasks.items()
                if not t.component_ref.name.startswith("comp-importer")}
    expected -= {k for k in expected if k.startswith("exit-handler")}
    return sorted(expected - set(run.tasks))


def submit(name: str, params: dict[str, Any] | None, host: str, experiment: str | None = None) -> str:
    """Submit pipeline ``name`` to the Kubeflow Pipelines API at ``host``; returns the run id."""
    try:
        import kfp
    except ImportError as exc:
        raise LlmdError("kfp is not installed: pip install 'llmd-kserve[pipelines]'") from exc
    pipeline = _get(name)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # kfp.Client's notice about server versions
            client = kfp.Client(host=host)
            result = client.create_run_from_pipeline_func(pipeline, arguments=params or {},
                                                          experiment_name=experiment)
    except Exception as exc:  # noqa: BLE001 - urllib3/ApiException/ValueError: all mean "could not submit"
        cause = exc.reason if hasattr(exc, "reason") else exc
        reason = " ".join(str(cause).split())[:160] or type(exc).__name__
        raise LlmdError(f"cannot submit to Kubeflow Pipelines at {host} ({type(exc).__name__}): {reason}") from None
    return str(result.run_id)
