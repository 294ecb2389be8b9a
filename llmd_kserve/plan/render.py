"""A plan as KServe manifests: its deployment as a ``DeploymentSpec``, written by the manifest renderer."""

from __future__ import annotations

from pathlib import Path

from llmd_kserve.kube.render import write_mode
from llmd_kserve.kube.spec import DeploymentSpec, PoolSpec
from llmd_kserve.plan.planner import Plan


def plan_spec(p: Plan, base: DeploymentSpec | None = None) -> DeploymentSpec:
    """``base`` (default: the built-in spec) with the plan's pools, GPUs per replica and router config: ``pd`` mode
    (vLLM prefill and decode pools) for a P/D plan, ``aggregated`` (one vLLM pool) otherwise."""
    base = base or DeploymentSpec()
    d = p.deployment
    gpus = max(1, round(p.gpus_per_replica))
    res = base.decode.resources.model_copy(update={"gpus": gpus})
    decode = base.decode.model_copy(update={"replicas": d.decode, "resources": res})
    prefill = base.prefill.model_copy(update={"replicas": d.prefill, "resources": res})
    router = base.router.model_copy(update={"config": d.config})
    return base.model_copy(update={"mode": d.mode, "decode": decode, "router": router,
                                   "prefill": prefill if d.prefill else PoolSpec(replicas=0, resources=res)})


def render_plan(p: Plan, out_dir: str | Path, base: DeploymentSpec | None = None) -> list[Path]:
    """Write the plan's manifests (one mode, a flat kustomize directory) under ``out_dir``; returns the files."""
    return write_mode(out_dir, plan_spec(p, base))
