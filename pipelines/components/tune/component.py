"""tune: Optuna TPE search over router weights, affinity, P/D decider, replicas and P:D split in the simulator
(``steps.tune``)."""

from kfp import dsl

from pipelines.components._base import COMPONENT_ARGS


@dsl.component(**COMPONENT_ARGS)
def tune(trials: dsl.Output[dsl.Dataset], trials_json: dsl.Output[dsl.Dataset], candidates: dsl.Output[dsl.Artifact],
         metrics: dsl.Output[dsl.Metrics], scenario: dict = {}, n_trials: int = 30, seed: int = 0, top_k: int = 2):  # noqa: B006
    """Score ``n_trials`` candidates on ``scenario`` (``llmd_kserve.tune.Scenario`` fields; {} = its defaults) in the
    cluster simulator. ``trials``/``trials_json``: the trials table (CSV / JSON with the scenario and the baseline);
    ``candidates``: the ``top_k`` best as JSON (confirm's input); ``metrics``: best and baseline objective."""
    from llmd_kserve.steps import tune as step

    values = step(scenario, trials.path, trials_json.path, candidates.path, n_trials=n_trials, seed=seed,
                  top_k=top_k)
    for key, value in values.items():
        metrics.log_metric(key, value)
