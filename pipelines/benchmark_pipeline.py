"""benchmark_pipeline: benchmark a target (a router URL, a self-contained local stack, or the simulator) and report."""

from kfp import dsl

from pipelines.components.benchmark import benchmark
from pipelines.components.report import report


@dsl.pipeline(name="llmd-benchmark", description="Benchmark a router URL, a local stack of simulated engines, or the "
              "cluster simulator; bench JSON, HTML report and headline metrics.")
def benchmark_pipeline(target: str = "local", workload: str = "shared-prefix",
                       workload_params: dict = {"num_groups": 4, "prompts_per_group": 8,  # noqa: B006
                                                "system_prompt_len": 1024, "question_len": 64, "output_len": 16},
                       rate: float = 4.0, sweep: list = [], num_requests: int = 32,  # noqa: B006
                       slo_ttft: float = 0.5, slo_tpot: float = 0.05, seed: int = 0, config: str = "default",
                       engines: int = 2, num_blocks: int = 0, time_scale: float = 1.0):
    bench = benchmark(target=target, workload=workload, workload_params=workload_params, rate=rate, sweep=sweep,
                      num_requests=num_requests, slo_ttft=slo_ttft, slo_tpot=slo_tpot, seed=seed, config=config,
                      engines=engines, num_blocks=num_blocks, time_scale=time_scale)
    bench.set_caching_options(False)
    report(results=bench.outputs["results"], title="llmd-kserve benchmark").set_caching_options(False)
