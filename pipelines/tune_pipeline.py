"""tune_pipeline: Optuna search in the simulator (the shipped default scored alongside), live confirmation, export."""

from kfp import dsl

from pipelines.components.confirm import confirm
from pipelines.components.report import report
from pipelines.components.tune import tune


@dsl.pipeline(name="llmd-tune", description="Tune router weights, prefix affinity, P/D decider, replica counts and "
              "P:D split in the cluster simulator (Optuna TPE); confirm the best live; export config + ConfigMap.")
def tune_pipeline(scenario: dict = {}, n_trials: int = 30, seed: int = 0, top_k: int = 2,  # noqa: B006
                  include_default: bool = True, time_scale: float = 1.0, name: str = "llmd",
                  namespace: str = "llmd"):
    search = tune(scenario=scenario, n_trials=n_trials, seed=seed, top_k=top_k)
    search.set_caching_options(False)
    live = confirm(candidates=search.outputs["candidates"], include_default=include_default, name=name,
                   namespace=namespace, time_scale=time_scale)
    live.set_caching_options(False)
    report(results=live.outputs["runs"], title="llmd-kserve tuning: live confirmation").set_caching_options(False)

