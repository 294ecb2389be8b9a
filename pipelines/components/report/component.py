"""report: bench JSON documents merged into one HTML report and a Markdown table (``steps.report``)."""

from kfp import dsl

from pipelines.components._base import COMPONENT_ARGS


@dsl.component(**COMPONENT_ARGS)
def report(results: dsl.Input[dsl.Dataset], html: dsl.Output[dsl.HTML], summary: dsl.Output[dsl.Markdown],
           metrics: dsl.Output[dsl.Metrics], extra: dsl.Input[dsl.Dataset] = None,
           title: str = "llmd-kserve pipeline report"):
    """One page for ``results`` (and ``extra`` when given): summary table, latency CDFs, hit rate, per-endpoint
    load; ``summary`` is the table in Markdown (the Kubeflow UI renders it)."""
    from llmd_kserve.steps import report as step

    sources = [results.path] + ([extra.path] if extra is not None else [])
    for key, value in step(sources, html.path, summary.path, title=title).items():
        metrics.log_metric(key, value)
