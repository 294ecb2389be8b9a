"""Kubeflow pipelines of llmd-kserve: components (``components/<name>/component.py``) and the pipelines built from them.

``PIPELINES`` maps each pipeline's name to its ``@dsl.pipeline`` function; ``llmd-kserve pipeline list|compile|run``
reads it. Importing this package imports ``kfp`` (the ``pipelines`` extra).
"""

from pipelines.benchmark_pipeline import benchmark_pipeline
from pipelines.deploy_benchmark_teardown import deploy_benchmark_teardown
from pipelines.plan_pipeline import plan_pipeline
from pipelines.trace_pipeline import trace_benchmark_pipeline
from pipelines.tune_pipeline import tune_pipeline

PIPELINES = {
    "benchmark_pipeline": benchmark_pipeline,
    "tune_pipeline": tune_pipeline,
    "deploy_benchmark_teardown": deploy_benchmark_teardown,
    "trace_benchmark_pipeline": trace_benchmark_pipeline,
    "plan_pipeline": plan_pipeline,
}

__all__ = ["PIPELINES", "benchmark_pipeline", "deploy_benchmark_teardown", "plan_pipeline", "trace_benchmark_pipeline",
           "tune_pipeline"]
