"""plan: the smallest deployment meeting an SLO, searched in the cluster simulator (``steps.capacity_plan``)."""

from kfp import dsl

from pipelines.components._base import COMPONENT_ARGS


@dsl.component(**COMPONENT_ARGS)
def plan(plan_json: dsl.Output[dsl.Dataset], manifests: dsl.Output[dsl.Artifact], metrics: dsl.Output[dsl.Metrics],
         workload: str = "shared-prefix", rate: float = 20.0, slo_ttft: float = 0.0, slo_tpot: float = 0.0,
         attainment: float = 0.95, max_replicas: int = 16, seeds: list = [0], duration: float = 20.0,  # noqa: B006
         configs: list = ["default", "round-robin"], pd_configs: list = ["pd-predicted-ttft"],  # noqa: B006
         headroom: bool = True, name: str = "llmd", namespace: str = "llmd"):
    """Plan ``workload`` (a scenario name, a trace file or a bench JSON path) at ``rate`` req/s for the SLO (0: the
    scenario's targets). ``plan_json``: the plan as JSON (times in seconds); ``manifests``: its KServe manifests (a
    kustomize directory); ``metrics``: GPUs, replicas, P and D counts, attainment, TTFT p90, headroom rate."""
    from llmd_kserve.steps import capacity_plan as step

    values = step(workload, plan_json.path, manifests.path, rate=rate, slo_ttft=slo_ttft, slo_tpot=slo_tpot,
                  attainment=attainment, max_replicas=max_replicas, seeds=seeds, duration=duration, configs=configs,
                  pd_configs=pd_configs, headroom=headroom, name=name, namespace=namespace)
    for key, value in values.items():
        metrics.log_metric(key, value)
