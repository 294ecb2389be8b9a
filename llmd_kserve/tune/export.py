"""Export a tuned candidate: its scheduler config YAML, a ConfigMap manifest ready to apply, and a deployment spec."""

from __future__ import annotations

from pathlib import Path

import yaml

from llmd_kserve.kube.spec import DeploymentSpec, Mode, PoolSpec, RouterSpec
from llmd_kserve.tune.space import Candidate

CONFIG_FILE, CONFIGMAP_FILE, SPEC_FILE = "config.yaml", "configmap.yaml", "deployment-spec.yaml"


class _BlockDumper(yaml.SafeDumper):
    """Multi-line strings (the ConfigMap's embedded config) as ``|`` blocks, so the manifest reads like YAML."""


_BlockDumper.add_representer(str, lambda d, s: d.represent_scalar("tag:yaml.org,2002:str", s,
                                                                  style="|" if "\n" in s else None))


def deployment_spec(candidate: Candidate, name: str = "llmd", namespace: str = "llmd",
                    mode: Mode | None = None) -> DeploymentSpec:
    """A :class:`DeploymentSpec` running the candidate's config with its replica counts (``pd`` mode for a P:D
    split, else ``aggregated``; ``sim`` keeps simulated engines, which always run as prefill + decode pools)."""
    mode = mode or ("pd" if candidate.prefill else "aggregated")
    if mode == "aggregated":
        pools = {"decode": PoolSpec(replicas=candidate.engines)}
    else:
        pools = {"prefill": PoolSpec(replicas=candidate.prefill), "decode": PoolSpec(replicas=candidate.decode)}
    return DeploymentSpec(name=name, namespace=namespace, mode=mode, router=RouterSpec(config=candidate.config),
                          **pools)


def export(candidate: Candidate, out_dir: str | Path, *, name: str = "llmd", namespace: str = "llmd") -> dict[str, str]:
    """Write ``config.yaml`` (EndpointPickerConfig), ``configmap.yaml`` (the router's ConfigMap, as ``llmd-kserve
    render`` names it) and ``deployment-spec.yaml`` under ``out_dir``; returns their paths by kind."""
    from llmd_kserve.kube.router import config_map

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    spec = deployment_spec(candidate, name, namespace)
    paths = {"config": out / CONFIG_FILE, "configmap": out / CONFIGMAP_FILE, "spec": out / SPEC_FILE}
    paths["config"].write_text(yaml.safe_dump(candidate.config, sort_keys=False))
    paths["configmap"].write_text(yaml.dump(config_map(spec), Dumper=_BlockDumper, sort_keys=False))
    paths["spec"].write_text(yaml.safe_dump(spec.model_dump(mode="json", exclude_defaults=True), sort_keys=False))
    return {k: str(v) for k, v in paths.items()}
