"""Router replicas in the rendered manifests: fixed replica count, anti-affinity, a PodDisruptionBudget, and with
governance the keys Secret and the shared Redis (rendered or external) passed as ``--state-url``."""

from __future__ import annotations

import pytest

from llmd_kserve.errors import ConfigError
from llmd_kserve.kube.render import HA_OVERLAY, ha_spec, render, write_tree
from llmd_kserve.kube.router_ha import ISVC_POD_LABEL
from llmd_kserve.kube.spec import MODES, DeploymentSpec, parse_spec


def _spec(replicas: int = 2, **governance) -> DeploymentSpec:
    return parse_spec({"mode": "aggregated", "router": {"replicas": replicas, "governance": governance}})


def _router(objs):
    return next(o for o in objs if o["kind"] == "InferenceService" and o["metadata"]["name"] == "llmd-router")


def _args(objs):
    return _router(objs)["spec"]["predictor"]["containers"][0]["args"]


def _kinds(objs):
    return [o["kind"] for o in objs]


@pytest.mark.parametrize("mode", MODES)
def test_one_replica_by_default_no_pdb_no_affinity_no_redis(mode) -> None:
    objs = render(DeploymentSpec(mode=mode))
    predictor = _router(objs)["spec"]["predictor"]
    assert predictor["minReplicas"] == predictor["maxReplicas"] == 1
    assert "affinity" not in predictor
    assert "PodDisruptionBudget" not in _kinds(objs) and "Deployment" not in _kinds(objs)
    assert not any(a.startswith(("--state-url", "--keys-file")) for a in _args(objs))


def test_replicas_get_a_pdb_and_spread_over_nodes(k8s_validate) -> None:
    objs = render(_spec(3))
    for obj in objs:
        assert k8s_validate(obj) == [], (obj["kind"], obj["metadata"]["name"])
    predictor = _router(objs)["spec"]["predictor"]
    assert predictor["minReplicas"] == predictor["maxReplicas"] == 3
    (term,) = predictor["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    selector = {ISVC_POD_LABEL: "llmd-router"}
    assert term["podAffinityTerm"]["labelSelector"]["matchLabels"] == selector
    (pdb,) = [o for o in objs if o["kind"] == "PodDisruptionBudget"]
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"] == {"minAvailable": 1, "selector": {"matchLabels": selector}}
    assert "Deployment" not in _kinds(objs)  # no governance: nothing to share
    assert _kinds(objs).index("PodDisruptionBudget") > _kinds(objs).index("InferenceService")


def test_governance_with_replicas_renders_redis_and_passes_its_url(k8s_validate) -> None:
    objs = render(_spec(2, enabled=True, redis={"storage": "1Gi", "storage_class": "standard"}))
    for obj in objs:
        assert k8s_validate(obj) == [], (obj["kind"], obj["metadata"]["name"])
    args = _args(objs)
    assert "--state-url=redis://llmd-router-state:6379/0" in args
    assert "--keys-file=/etc/llmd-keys/keys.yaml" in args
    predictor = _router(objs)["spec"]["predictor"]
    assert {"name": "router-keys", "secret": {"secretName": "llmd-router-keys"}} in predictor["volumes"]
    assert {"mountPath": "/etc/llmd-keys", "name": "router-keys", "readOnly": True} in \
        predictor["containers"][0]["volumeMounts"]
    pvc = next(o for o in objs if o["kind"] == "PersistentVolumeClaim")
    assert pvc["spec"]["resources"]["requests"] == {"storage": "1Gi"}
    assert pvc["spec"]["storageClassName"] == "standard"
    dep = next(o for o in objs if o["kind"] == "Deployment")
    assert dep["metadata"]["name"] == "llmd-router-state" and dep["spec"]["strategy"] == {"type": "Recreate"}
    (redis,) = dep["spec"]["template"]["spec"]["containers"]
    assert redis["image"] == "redis:7" and redis["args"][1:3] == ["--appendonly", "yes"]
    assert dep["spec"]["template"]["spec"]["volumes"] == [
        {"name": "data", "persistentVolumeClaim": {"claimName": "llmd-router-state"}}]
    svc = next(o for o in objs if o["kind"] == "Service")
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
    assert svc["spec"]["ports"][0]["port"] == 6379
    kinds = _kinds(objs)
    assert kinds.index("Service") < kinds.index("InferenceService", kinds.index("Service"))  # Redis before routers


def test_redis_without_storage_uses_an_empty_dir() -> None:
    objs = render(_spec(2, enabled=True))
    assert "PersistentVolumeClaim" not in _kinds(objs)
    dep = next(o for o in objs if o["kind"] == "Deployment")
    assert dep["spec"]["template"]["spec"]["volumes"] == [{"emptyDir": {}, "name": "data"}]


def test_external_state_url_renders_no_redis() -> None:
    objs = render(_spec(2, enabled=True, state_url="redis://redis.shared:6379/3", keys_secret="tenant-keys"))
    assert "Deployment" not in _kinds(objs) and "PodDisruptionBudget" in _kinds(objs)
    assert "--state-url=redis://redis.shared:6379/3" in _args(objs)
    assert {"name": "router-keys", "secret": {"secretName": "tenant-keys"}} in \
        _router(objs)["spec"]["predictor"]["volumes"]


def test_one_replica_with_governance_keeps_state_in_memory() -> None:
    objs = render(_spec(1, enabled=True))
    assert "--keys-file=/etc/llmd-keys/keys.yaml" in _args(objs)
    assert not any(a.startswith("--state-url") for a in _args(objs))
    assert "Deployment" not in _kinds(objs) and "PodDisruptionBudget" not in _kinds(objs)


@pytest.mark.parametrize("bad, field", [({"router": {"replicas": 0}}, "replicas"),
                                        ({"router": {"governance": {"state_url": "http://x"}}}, "state_url"),
                                        ({"router": {"governance": {"redis": {"size": "1Gi"}}}}, "size")])
def test_bad_router_specs(bad, field) -> None:
    with pytest.raises(ConfigError, match=field):
        parse_spec(bad)


def test_tree_has_the_ha_overlay_on_the_base(tmp_path) -> None:
    write_tree(tmp_path)
    ha = tmp_path / "overlays" / HA_OVERLAY
    names = sorted(p.name for p in ha.glob("*.yaml"))
    assert "poddisruptionbudget-llmd-router.yaml" in names
    assert "deployment-llmd-router-state.yaml" in names and "service-llmd-router-state.yaml" in names
    assert "../../base" in (ha / "kustomization.yaml").read_text()
    assert ha_spec(DeploymentSpec()).router.replicas == 2
    for mode in MODES:  # the existing overlays keep one replica
        assert not (tmp_path / "overlays" / mode / "poddisruptionbudget-llmd-router.yaml").exists()
