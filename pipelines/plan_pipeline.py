"""plan_pipeline: capacity planning in the cluster simulator; the plan as JSON and its KServe manifests."""

from kfp import dsl

from pipelines.components.plan import plan


@dsl.pipeline(name="llmd-plan", description="The fewest GPUs (aggregated or P/D, P:D ratio, router config) that "
              "meet a TTFT/TPOT SLO for a workload at a rate, searched in the cluster simulator; plan JSON and "
              "KServe manifests.")
def plan_pipeline(workload: str = "shared-prefix", rate: float = 20.0, slo_ttft: float = 0.0, slo_tpot: float = 0.0,
                  attainment: float = 0.95, max_replicas: int = 16, seeds: list = [0],  # noqa: B006
                  duration: float = 20.0, configs: list = ["default", "round-robin"],  # noqa: B006
                  pd_configs: list = ["pd-predicted-ttft"], headroom: bool = True,  # noqa: B006
                  name: str = "llmd", namespace: str = "llmd"):
    plan(workload=workload, rate=rate, slo_ttft=slo_ttft, slo_tpot=slo_tpot, attainment=attainment,
         max_replicas=max_replicas, seeds=seeds, duration=duration, configs=configs, pd_configs=pd_configs,
         headroom=headroom, name=name, namespace=namespace).set_caching_options(False)
