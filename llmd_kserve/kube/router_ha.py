"""Router replicas on Kubernetes: spread over nodes, kept up through voluntary disruptions, sharing one state store.

With ``router.replicas`` > 1 (replicas are active-active; each has its own scheduler state, see
``docs/simulator.md``):

* the router pods prefer distinct nodes (pod anti-affinity, preferred, on ``kubernetes.io/hostname``), so a node
  drain or failure takes one replica, not all;
* a ``PodDisruptionBudget`` (``policy/v1``, ``minAvailable: 1``) keeps one replica serving through drains and
  upgrades.

With governance on (``router.governance.enabled``: virtual keys with rate limits and budgets), the routers read the
keys from a Secret (``--keys-file``) and, with more than one replica, keep their counters in one Redis
(``--state-url``) so that a key's limit holds across replicas: an external ``state_url``, or a rendered Redis
Deployment + Service (``redis:7`` with the append-only file on, on a PersistentVolumeClaim when ``redis.storage``
is set). Router pods are selected by KServe's own pod label ``serving.kserve.io/inferenceservice``.
"""

from __future__ import annotations

from typing import Any

from llmd_kserve.kube.k8s import client, metadata, port, resources, serialize
from llmd_kserve.kube.spec import DeploymentSpec

ISVC_POD_LABEL = "serving.kserve.io/inferenceservice"
"""KServe's label on every pod of an InferenceService (value: its name)."""
HOSTNAME_TOPOLOGY = "kubernetes.io/hostname"
KEYS_DIR = "/etc/llmd-keys"
KEYS_FILE = f"{KEYS_DIR}/keys.yaml"
REDIS_PORT = 6379


def router_pod_labels(spec: DeploymentSpec) -> dict[str, str]:
    """The labels that select exactly the router's pods."""
    return {ISVC_POD_LABEL: spec.router_name}


def router_affinity(spec: DeploymentSpec) -> dict[str, Any] | None:
    """Preferred pod anti-affinity among the router's replicas (None with one replica)."""
    if spec.router.replicas < 2:
        return None
    c = client()
    term = c.V1WeightedPodAffinityTerm(weight=100, pod_affinity_term=c.V1PodAffinityTerm(
        topology_key=HOSTNAME_TOPOLOGY, label_selector=c.V1LabelSelector(match_labels=router_pod_labels(spec))))
    affinity: dict[str, Any] = serialize(c.V1Affinity(pod_anti_affinity=c.V1PodAntiAffinity(
        preferred_during_scheduling_ignored_during_execution=[term])))
    return affinity


def router_pdb(spec: DeploymentSpec) -> dict[str, Any]:
    c = client()
    pdb = serialize(c.V1PodDisruptionBudget(api_version="policy/v1", kind="PodDisruptionBudget",
                                            spec=c.V1PodDisruptionBudgetSpec(
                                                min_available=1,
                                                selector=c.V1LabelSelector(match_labels=router_pod_labels(spec)))))
    pdb["metadata"] = metadata(spec, spec.router_name, "router")
    return _ordered(pdb)


def governance_args(spec: DeploymentSpec) -> list[str]:
    """The router's governance flags: the keys file, and the shared state when the replicas need one."""
    if not spec.router.governance.enabled:
        return []
    args = [f"--keys-file={KEYS_FILE}"]
    if spec.router_state_url:
        args.append(f"--state-url={spec.router_state_url}")
    return args


def governance_volumes(spec: DeploymentSpec) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(pod volumes, container mounts) for the keys Secret; empty without governance."""
    if not spec.router.governance.enabled:
        return [], []
    c = client()
    volume = c.V1Volume(name="router-keys", secret=c.V1SecretVolumeSource(secret_name=spec.router_keys_secret))
    mount = c.V1VolumeMount(name="router-keys", mount_path=KEYS_DIR, read_only=True)
    return [serialize(volume)], [serialize(mount)]


def renders_redis(spec: DeploymentSpec) -> bool:
    gov = spec.router.governance
    return gov.enabled and not gov.state_url and spec.router.replicas > 1


def redis_objects(spec: DeploymentSpec) -> list[dict[str, Any]]:
    """The shared Redis (PersistentVolumeClaim when ``storage`` is set, Deployment, Service), or none."""
    if not renders_redis(spec):
        return []
    c, r, name = client(), spec.router.governance.redis, spec.router_state_name
    labels = {"app.kubernetes.io/name": name, "app.kubernetes.io/instance": spec.name}
    out: list[dict[str, Any]] = []
    if r.storage:
        pvc = serialize(c.V1PersistentVolumeClaim(api_version="v1", kind="PersistentVolumeClaim",
                                                  spec=c.V1PersistentVolumeClaimSpec(
                                                      access_modes=["ReadWriteOnce"], storage_class_name=r.storage_class,
                                                      resources=c.V1VolumeResourceRequirements(
                                                          requests={"storage": r.storage}))))
        pvc["metadata"] = metadata(spec, name, "router-state")
        out.append(_ordered(pvc))
        data = c.V1Volume(name="data", persistent_volume_claim=c.V1PersistentVolumeClaimVolumeSource(claim_name=name))
    else:
        data = c.V1Volume(name="data", empty_dir=c.V1EmptyDirVolumeSource())
    ping = c.V1Probe(_exec=c.V1ExecAction(command=["redis-cli", "ping"]), period_seconds=5, failure_threshold=3)
    container = c.V1Container(
        name="redis", image=r.image, args=["redis-server", "--appendonly", "yes", "--dir", "/data"],
        ports=[port(REDIS_PORT, "redis")], readiness_probe=ping,
        liveness_probe=c.V1Probe(tcp_socket=c.V1TCPSocketAction(port=REDIS_PORT), period_seconds=10,
                                 failure_threshold=3),
        resources=resources(r.cpu, r.memory), volume_mounts=[c.V1VolumeMount(name="data", mount_path="/data")])
    dep = serialize(c.V1Deployment(api_version="apps/v1", kind="Deployment", spec=c.V1DeploymentSpec(
        replicas=1, strategy=c.V1DeploymentStrategy(type="Recreate"),  # one writer of the append-only file
        selector=c.V1LabelSelector(match_labels=labels),
        template=c.V1PodTemplateSpec(metadata=c.V1ObjectMeta(labels=labels),
                                     spec=c.V1PodSpec(containers=[container], volumes=[data])))))
    dep["metadata"] = metadata(spec, name, "router-state")
    svc = serialize(c.V1Service(api_version="v1", kind="Service", spec=c.V1ServiceSpec(
        selector=labels, ports=[c.V1ServicePort(name="redis", port=REDIS_PORT, target_port=REDIS_PORT,
                                                protocol="TCP")])))
    svc["metadata"] = metadata(spec, name, "router-state")
    return [*out, _ordered(dep), _ordered(svc)]


def router_ha_objects(spec: DeploymentSpec) -> list[dict[str, Any]]:
    """What the router's replicas need beside the router itself: the PodDisruptionBudget (replicas > 1)."""
    return [router_pdb(spec)] if spec.router.replicas > 1 else []


def _ordered(obj: dict[str, Any]) -> dict[str, Any]:
    head: dict[str, Any] = {k: obj[k] for k in ("apiVersion", "kind", "metadata") if k in obj}
    return {**head, **{k: v for k, v in obj.items() if k not in head}}
