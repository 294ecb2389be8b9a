"""The scheduler config embedded in the manifests loads with the router's own loader."""

from __future__ import annotations

import yaml

from llmd_kserve.config.loader import load_config, parse_config
from llmd_kserve.kube.render import render, render_llmisvc
from llmd_kserve.kube.router import CONFIG_KEY, CONFIG_PATH
from llmd_kserve.kube.spec import DeploymentSpec, RouterSpec


def mounted_config(objs, tmp_path):
    """Write the ConfigMap's key as the pod would see it at /etc/llmd/config.yaml; return that path."""
    (cm,) = [o for o in objs if o["kind"] == "ConfigMap"]
    path = tmp_path / CONFIG_KEY
    path.write_text(cm["data"][CONFIG_KEY])
    return path


def test_configmap_config_loads_with_the_router_loader(tmp_path):
    spec = DeploymentSpec()
    objs = render(spec)
    router = next(o for o in objs if (o["kind"], o["metadata"]["name"]) == ("InferenceService", "llmd-router"))
    assert f"--config={CONFIG_PATH}" in router["spec"]["predictor"]["containers"][0]["args"]
    loaded = load_config(mounted_config(objs, tmp_path))
    shipped = load_config(spec.router_config)
    assert loaded.model_dump(exclude={"source"}) == shipped.model_dump(exclude={"source"})


def test_router_config_follows_the_mode_unless_given():
    assert DeploymentSpec(mode="aggregated").router_config == "default"
    assert DeploymentSpec(mode="pd").router_config == "pd-predicted-ttft"
    assert DeploymentSpec(mode="pd", router=RouterSpec(config="precise-prefix")).router_config == "precise-prefix"


def test_every_shipped_config_embeds_and_loads(tmp_path):
    for name in ("round-robin", "random", "load-only", "approx-prefix", "precise-prefix", "default"):
        objs = render(DeploymentSpec(router=RouterSpec(config=name)))
        assert load_config(mounted_config(objs, tmp_path)).model_dump(exclude={"source"}) == \
            load_config(name).model_dump(exclude={"source"})


def test_llminferenceservice_inline_config_loads():
    (_, llm) = render_llmisvc(DeploymentSpec(mode="pd", router=RouterSpec(config="precise-prefix")))
    inline = llm["spec"]["router"]["scheduler"]["config"]["inline"]
    assert parse_config(inline).model_dump(exclude={"source"}) == \
        load_config("precise-prefix").model_dump(exclude={"source"})
    assert inline == yaml.safe_load(yaml.safe_dump(inline))
