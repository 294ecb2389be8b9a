"""deploy_benchmark_teardown: render → deploy → wait → benchmark sweep → report, with teardown in a dsl.ExitHandler."""

from kfp import dsl

from pipelines.components.benchmark import benchmark
from pipelines.components.deploy import deploy
from pipelines.components.render_manifests import render_manifests
from pipelines.components.report import report
from pipelines.components.teardown import teardown
from pipelines.components.wait_ready import wait_ready


@dsl.pipeline(name="llmd-deploy-benchmark-teardown",
              description="Deploy on KServe (or the local stack), wait, benchmark a rate sweep, report; the "
              "teardown runs in an exit handler, so a failed step still cleans up.")
def deploy_benchmark_teardown(target: str = "kserve", spec: str = "", mode: str = "sim",
                              workload: str = "shared-prefix",
                              workload_params: dict = {"num_groups": 4, "prompts_per_group": 8,  # noqa: B006
                                                       "system_prompt_len": 1024, "question_len": 64,
                                                       "output_len": 16},
                              sweep: list = [2.0, 4.0], num_requests: int = 32, slo_ttft: float = 0.5,  # noqa: B006
                              slo_tpot: float = 0.05, seed: int = 0, engines: int = 2, config: str = "default",
                              name: str = "llmd", namespace: str = "llmd", state_dir: str = "",
                              timeout: float = 900.0):
    cleanup = teardown(target=target, name=name, namespace=namespace, state_dir=state_dir,
                       run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER)
    cleanup.set_caching_options(False)
    with dsl.ExitHandler(cleanup, name="deploy-and-benchmark"):
        manifests = render_manifests(spec=spec, mode=mode)
        up = deploy(target=target, spec=spec, mode=mode, engines=engines, config=config, state_dir=state_dir,
                    run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER)
        up.after(manifests)
        ready = wait_ready(handle=up.output, timeout=timeout)
        bench = benchmark(target=ready.outputs["router_url"], workload=workload, workload_params=workload_params,
                          sweep=sweep, num_requests=num_requests, slo_ttft=slo_ttft, slo_tpot=slo_tpot, seed=seed)
        report(results=bench.outputs["results"], title="llmd-kserve deploy → benchmark")
        for task in (manifests, up, ready, bench):
            task.set_caching_options(False)
