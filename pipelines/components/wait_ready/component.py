"""wait_ready: block until the deployment serves; outputs its router URL (``steps.wait_ready``)."""

from typing import NamedTuple

from kfp import dsl

from pipelines.components._base import COMPONENT_ARGS


@dsl.component(**COMPONENT_ARGS)
def wait_ready(handle: str, timeout: float = 900.0) -> NamedTuple("Outputs", handle=str, router_url=str):
    """Wait for the InferenceServices/graph of ``handle`` (deploy's output) to be Ready, or for the local router to
    list a model; fails after ``timeout`` seconds."""
    import json
    from typing import NamedTuple

    from llmd_kserve.steps import wait_ready as step

    ready = step(json.loads(handle), timeout=timeout)
    return NamedTuple("Outputs", handle=str, router_url=str)(json.dumps(ready), ready["router_url"])
