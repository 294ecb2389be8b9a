"""Helpers for the component tests: local artifacts (the objects kfp hands a component) and the compiled interface."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kfp import dsl
from kfp.pipeline_spec import pipeline_spec_pb2


def artifact(kind: type, tmp: Path, name: str) -> Any:
    """An output artifact of ``kind`` (dsl.Dataset, dsl.HTML, dsl.Metrics…) backed by a file under ``tmp``."""
    return kind(name=name, uri=str(tmp / name))


def interface(component: Any) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    """(input parameters -> IR type, input artifacts -> schema title, output artifacts -> schema title)."""
    spec = component.pipeline_spec.components[next(iter(component.pipeline_spec.components))]
    params = {k: pipeline_spec_pb2.ParameterType.ParameterTypeEnum.Name(v.parameter_type)
              for k, v in spec.input_definitions.parameters.items()}
    ins = {k: v.artifact_type.schema_title for k, v in spec.input_definitions.artifacts.items()}
    outs = {k: v.artifact_type.schema_title for k, v in spec.output_definitions.artifacts.items()}
    return params, ins, outs


def final_status(state: str = "FAILED") -> dsl.PipelineTaskFinalStatus:
    """What kfp passes an exit task: the guarded steps' final state."""
    return dsl.PipelineTaskFinalStatus(state=state, pipeline_job_resource_name="test-run", pipeline_task_name="x",
                                       error_code=None, error_message=None)
