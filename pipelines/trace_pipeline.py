"""trace_benchmark_pipeline: a request trace (an input artifact) replayed against a target, then reported."""

from kfp import dsl

from pipelines.components.benchmark import benchmark
from pipelines.components.report import report


@dsl.pipeline(name="llmd-trace-benchmark", description="Replay a request trace (Mooncake JSONL, imported from "
              "trace_uri) with its own timestamps against a router URL, a local stack or the cluster simulator; "
              "bench JSON, HTML report, Benchmark Reports and headline metrics.")
def trace_benchmark_pipeline(trace_uri: str, target: str = "sim",
                             trace_params: dict = {"time_scale": 1.0, "max_requests": 500},  # noqa: B006
                             slo_ttft: float = 2.0, slo_tpot: float = 0.05, seed: int = 0, config: str = "default",
                             engines: int = 8, num_blocks: int = 0):
    trace = dsl.importer(artifact_uri=trace_uri, artifact_class=dsl.Dataset, reimport=False)
    bench = benchmark(target=target, trace=trace.output, trace_params=trace_params, num_requests=0,
                      slo_ttft=slo_ttft, slo_tpot=slo_tpot, seed=seed, config=config, engines=engines,
                      num_blocks=num_blocks)
    bench.set_caching_options(False)
    report(results=bench.outputs["results"], title="llmd-kserve trace replay").set_caching_options(False)
