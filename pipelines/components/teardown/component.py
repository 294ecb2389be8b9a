"""teardown: remove the deployment whatever state the run reached; the pipelines' exit handler (``steps.teardown``)."""

from kfp import dsl

from pipelines.components._base import COMPONENT_ARGS


@dsl.component(**COMPONENT_ARGS)
def teardown(status: dsl.PipelineTaskFinalStatus, target: str = "local", name: str = "llmd", namespace: str = "llmd",
             state_dir: str = "", run_id: str = "local") -> str:
    """Delete every KServe object labelled with deployment ``name`` in ``namespace``, or stop the local stack of
    ``run_id``; ``status`` is the guarded steps' final state (logged). Returns what was removed, as JSON."""
    import json

    from llmd_kserve.steps import teardown as step

    removed = step(target, name=name, namespace=namespace, state_dir=state_dir, run_id=run_id)
    print(f"pipeline {status.pipeline_job_resource_name} ended {status.state}; removed {len(removed)}: {removed}")
    return json.dumps(removed)
