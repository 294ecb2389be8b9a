"""render_manifests: KServe manifests of a deployment spec as a kustomize directory (``steps.render_manifests``)."""

from kfp import dsl

from pipelines.components._base import COMPONENT_ARGS


@dsl.component(**COMPONENT_ARGS)
def render_manifests(manifests: dsl.Output[dsl.Artifact], spec: str = "", mode: str = "sim") -> int:
    """Render the ServingRuntime, InferenceServices, InferenceGraph and RBAC of ``spec`` (YAML text; "" = defaults)
    in ``mode`` (sim | aggregated | pd) into the ``manifests`` directory; returns the number of files."""
    from llmd_kserve.steps import render_manifests as step

    return len(step(manifests.path, spec or None, mode))
