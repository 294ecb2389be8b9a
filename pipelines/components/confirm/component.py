"""confirm: replay the best candidates and the shipped default live on the local stack; export the winner
(``steps.confirm_step``)."""

from kfp import dsl

from pipelines.components._base import COMPONENT_ARGS


@dsl.component(**COMPONENT_ARGS)
def confirm(candidates: dsl.Input[dsl.Artifact], config: dsl.Output[dsl.Artifact],
            configmap: dsl.Output[dsl.Artifact], runs: dsl.Output[dsl.Dataset], report: dsl.Output[dsl.HTML],
            metrics: dsl.Output[dsl.Metrics], include_default: bool = True, name: str = "llmd",
            namespace: str = "llmd", time_scale: float = 1.0) -> str:
    """Replay ``candidates`` (tune's output) and, with ``include_default``, the shipped ``default`` on the scenario's
    held-out seed, live; ``config``: the winner's EndpointPickerConfig YAML; ``configmap``: the router ConfigMap
    manifest (``name``/``namespace``) ready to apply; ``runs``/``report``: the live runs. Returns the winner."""
    import tempfile

    from llmd_kserve.steps import confirm_step, copy_file

    with tempfile.TemporaryDirectory() as tmp:
        out = confirm_step(candidates.path, tmp, runs.path, report.path, include_default=include_default, name=name,
                           namespace=namespace, time_scale=time_scale)
        copy_file(out["files"]["config"], config.path)
        copy_file(out["files"]["configmap"], configmap.path)
    metrics.log_metric("winner_value", out["winner_value"])
    metrics.log_metric("default_value", out["default_value"])
    return out["winner"]
