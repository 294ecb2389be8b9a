"""report: bench JSON documents merged into one HTML report, a Markdown table and Benchmark Reports (``steps.report``)."""

from kfp import dsl

from pipelines.components._base import COMPONENT_ARGS


@dsl.component(**COMPONENT_ARGS)
def report(results: dsl.Input[dsl.Dataset], html: dsl.Output[dsl.HTML], summary: dsl.Output[dsl.Markdown],
           metrics: dsl.Output[dsl.Metrics], benchmark_reports: dsl.Output[dsl.Artifact],
           extra: dsl.Input[dsl.Dataset] = None, title: str = "llmd-kserve pipeline report"):
    """One page for ``results`` (and ``extra`` when given): summary table, latency CDFs, hit rate, per-endpoint
    load; ``summary`` is the table in Markdown (the Kubeflow UI renders it); ``benchmark_reports`` a directory of
    llm-d Benchmark Reports v0.2.1, one per run."""
    from llmd_kserve.steps import report as step

    sources = [results.path] + ([extra.path] if extra is not None else [])
    for key, value in step(sources, html.path, summary.path, title=title, br_dir=benchmark_reports.path).items():
        metrics.log_metric(key, value)
