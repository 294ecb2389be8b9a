"""simulate: a what-if in the virtual-time cluster simulator (``steps.simulate``)."""

from kfp import dsl

from pipelines.components._base import COMPONENT_ARGS


@dsl.component(**COMPONENT_ARGS)
def simulate(results: dsl.Output[dsl.Dataset], report: dsl.Output[dsl.HTML], metrics: dsl.Output[dsl.Metrics],
             config: str = "default", engines: int = 8, prefill: int = 0, decode: int = 0, num_blocks: int = 0,
             workload: str = "shared-prefix", workload_params: dict = {}, rate: float = 20.0,  # noqa: B006
             sweep: list = [], num_requests: int = 1000, slo_ttft: float = 0.5, slo_tpot: float = 0.05,  # noqa: B006
             seed: int = 0):
    """Run ``workload`` on a simulated cluster (``engines`` aggregated, or ``prefill`` + ``decode`` pools) under
    router ``config``, in virtual time; same outputs as ``benchmark``."""
    from llmd_kserve.steps import simulate as step

    values = step(results.path, report.path, config=config, engines=engines, prefill=prefill, decode=decode,
                  num_blocks=num_blocks or None, workload=workload, workload_params=workload_params, rate=rate,
                  sweep=[float(r) for r in sweep], num_requests=num_requests, slo_ttft=slo_ttft, slo_tpot=slo_tpot,
                  seed=seed)
    for key, value in values.items():
        metrics.log_metric(key, value)
