"""benchmark: a workload or a rate sweep against a target; bench JSON, HTML report and metrics (``steps.benchmark``)."""

from kfp import dsl

from pipelines.components._base import COMPONENT_ARGS


@dsl.component(**COMPONENT_ARGS)
def benchmark(results: dsl.Output[dsl.Dataset], report: dsl.Output[dsl.HTML], metrics: dsl.Output[dsl.Metrics],
              target: str = "local", workload: str = "shared-prefix", workload_params: dict = {},  # noqa: B006
              rate: float = 4.0, sweep: list = [], num_requests: int = 40, slo_ttft: float = 0.5,  # noqa: B006
              slo_tpot: float = 0.05, seed: int = 0, config: str = "default", engines: int = 2, num_blocks: int = 0,
              time_scale: float = 1.0, trace: dsl.Input[dsl.Dataset] = None,
              trace_params: dict = {}):  # noqa: B006
    """Benchmark ``target`` (a router URL, ``local`` = a local stack started for this step, or ``sim``) with
    ``workload`` at Poisson ``rate`` req/s (or one run per rate of ``sweep``); with ``trace`` (a trace file) replay
    it at its own times instead (``trace_params``: time_scale, window, max_requests, max_model_len, fit,
    block_tokens, format; ``num_requests`` 0 = all). ``results``: the bench JSON; ``report``: the HTML report;
    ``metrics``: TTFT p50/p90 and TPOT p50 (s), goodput under the SLO (req/s), SLO attainment and prefix-cache hit
    rate."""
    from llmd_kserve.steps import benchmark as step

    values = step(target, results.path, report.path, workload=workload, workload_params=workload_params, rate=rate,
                  sweep=[float(r) for r in sweep], num_requests=num_requests, slo_ttft=slo_ttft, slo_tpot=slo_tpot,
                  seed=seed, config=config, engines=engines, num_blocks=num_blocks or None, time_scale=time_scale,
                  trace=trace.path if trace is not None else None, trace_params=trace_params)
    for key, value in values.items():
        metrics.log_metric(key, value)
