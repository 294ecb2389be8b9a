"""deploy: apply the stack on KServe, or start the detached local stack of simulated engines (``steps.deploy``)."""

from kfp import dsl

from pipelines.components._base import COMPONENT_ARGS


@dsl.component(**COMPONENT_ARGS)
def deploy(target: str = "local", spec: str = "", mode: str = "sim", engines: int = 2, config: str = "default",
           num_blocks: int = 0, time_scale: float = 1.0, state_dir: str = "", run_id: str = "local") -> str:
    """``target="kserve"``: apply ``spec`` (YAML text; "" = defaults) in ``mode`` through the Kubernetes API (in-cluster
    service account or kubeconfig). ``target="local"``: start ``engines`` simulated engines + the router running
    ``config`` (``num_blocks`` KV blocks each, 0 = the profile's) on this machine. Returns the handle as JSON."""
    import json

    from llmd_kserve.steps import deploy as step

    return json.dumps(step(target, spec=spec or None, mode=mode, engines=engines, config=config,
                           num_blocks=num_blocks or None, time_scale=time_scale, state_dir=state_dir, run_id=run_id))
