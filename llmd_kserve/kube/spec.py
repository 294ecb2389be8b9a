"""The typed deployment spec: what to deploy on KServe (model, pools, router, KV transfer/events, images, mode)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from llmd_kserve import __version__
from llmd_kserve.defaults import DEFAULT_PROFILE, ROUTER_PORT, SCRAPE_INTERVAL_S
from llmd_kserve.errors import ConfigError, config_error_from

Mode = Literal["sim", "aggregated", "pd"]
MODES: tuple[Mode, ...] = ("sim", "aggregated", "pd")

# Labels every rendered object carries (teardown/status find objects by ``INSTANCE_LABEL``).
PART_OF_LABEL = "app.kubernetes.io/part-of"
INSTANCE_LABEL = "app.kubernetes.io/instance"
COMPONENT_LABEL = "app.kubernetes.io/component"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGER = "llmd-kserve"
ROLE_LABEL = "llm-d.ai/role"
"""llm-d's role label on model-server pods: ``prefill`` | ``decode`` | ``both``."""
POOL_LABEL = "llmd.kserve.io/pool"
"""Set (to the deployment name) on every engine pod and on nothing else: the router's discovery selector."""

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ModelSource(_Model):
    """Where the weights come from and the name clients send in ``"model"``."""

    uri: str = "hf://meta-llama/Llama-3.1-8B-Instruct"
    """``storageUri`` for KServe's storage initializer (``hf://``, ``s3://``, ``gs://``, ``pvc://``…)."""
    served_name: str = "llama-3.1-8b"


class Resources(_Model):
    """Per-replica resources; ``gpus`` becomes ``nvidia.com/gpu`` (ignored in sim mode)."""

    gpus: int = Field(1, ge=0)
    cpu: str = "8"
    memory: str = "64Gi"


class PoolSpec(_Model):
    """One engine pool (an InferenceService of identical replicas)."""

    replicas: int = Field(1, ge=0)
    resources: Resources = Resources()
    extra_args: tuple[str, ...] = ()
    """Appended to the engine's command line (e.g. ``--max-model-len=8192``, ``--tensor-parallel-size=2``)."""


class RouterSpec(_Model):
    """The llmd-kserve router node."""

    config: str | dict[str, Any] | None = None
    """A shipped scheduler config name, a YAML file path, or an inline EndpointPickerConfig mapping.
    None: ``pd-predicted-ttft`` when prefill and decode are split, else ``default``."""
    replicas: int = Field(1, ge=1)
    port: int = Field(ROUTER_PORT, ge=1, le=65535)
    scrape_interval: float = Field(SCRAPE_INTERVAL_S, gt=0)
    tokenizer: str | None = None
    """Router tokenizer; None: ``sim`` for simulated engines, ``render`` (the engine's /render) for vLLM."""
    cpu: str = "2"
    memory: str = "2Gi"
    flow_per_endpoint: int | None = Field(None, ge=1)
    """Flow control (``--flow-per-endpoint``): requests in flight per engine before the rest wait in the router by
    priority band, where ``llmd_router_queue_depth`` (and autoscaling's queue triggers) see them; None: off."""


class EppSpec(_Model):
    """The Endpoint Picker of the Gateway API form (``llmd-kserve epp``)."""

    hot_standby: bool = True
    """Two replicas electing a leader on a Lease (``--leader-elect``): one serves picks, the other runs the data path
    warm and takes over when the leader is lost (False: one replica)."""
    lease_duration: int = Field(15, ge=1)
    renew_deadline: float = Field(10.0, gt=0)
    retry_period: float = Field(2.0, gt=0)

    @model_validator(mode="after")
    def _timing(self) -> EppSpec:
        from llmd_kserve.kube.leader import LeaseSettings

        try:  # client-go's rules: lease duration > renew deadline > 1.2 x retry period
            LeaseSettings("epp", "ns", "id", self.lease_duration, self.renew_deadline, self.retry_period)
        except ConfigError as exc:
            raise ValueError(exc.message if hasattr(exc, "message") else str(exc)) from None
        return self


class KVTransferSpec(_Model):
    """vLLM KV transfer between prefill and decode replicas (pd mode only)."""

    connector: str = "NixlConnector"
    role: str = "kv_both"
    side_channel_port: int = Field(5600, ge=1, le=65535)


class KVEventsSpec(_Model):
    """vLLM KV-cache events (ZMQ PUB) that feed the router's precise prefix index."""

    enabled: bool = True
    port: int = Field(5557, ge=1, le=65535)
    topic_prefix: str = "kv"
    """Topic is ``<prefix>@$(POD_IP):<http port>@<served model>`` (pod IP from the downward API)."""


class Images(_Model):
    llmd: str = f"ghcr.io/llmd-kserve/llmd-kserve:{__version__}"
    """This project's image (entrypoint ``llmd-kserve``): router, and simulated engines in sim mode."""
    vllm: str = "vllm/vllm-openai:v0.26.0"


class ReplicaRange(_Model):
    """Replicas an autoscaled pool may have."""

    min: int = Field(1, ge=1)
    """At least one: an engine replica takes minutes to start (weights, compilation), and the router needs one."""
    max: int = Field(4, ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> ReplicaRange:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) must not exceed max ({self.max})")
        return self


class ScalingBehavior(_Model):
    """The HPA's pace (``advanced.horizontalPodAutoscalerConfig.behavior``): fast up, slow down."""

    scale_up_stabilization_s: int = Field(0, ge=0, le=3600)
    scale_up_pods: int = Field(2, ge=1)
    """At most this many replicas added per ``scale_up_period_s``."""
    scale_up_period_s: int = Field(60, ge=1, le=1800)
    scale_down_stabilization_s: int = Field(300, ge=0, le=3600)
    """The highest recommendation of this many last seconds wins: a dip in load removes no replica."""
    scale_down_pods: int = Field(1, ge=1)
    scale_down_period_s: int = Field(120, ge=1, le=1800)


class AutoscalingSpec(_Model):
    """KEDA autoscaling of the engine pools on the router's signals (``llmd_router_*``); off unless ``enabled``."""

    enabled: bool = False
    pd: Literal["separate", "together"] = "separate"
    """P/D: ``separate`` scales prefill on its queue and TTFT headroom and decode on its KV-cache usage;
    ``together`` gives both pools every signal, so they grow and shrink in step (keeping their ratio)."""
    prometheus_url: str = "http://prometheus-operated.monitoring.svc.cluster.local:9090"
    """The Prometheus that scrapes the router (KEDA's ``serverAddress``)."""
    selector: str | None = None
    """PromQL label matchers that pick the router's series; None: ``namespace="<ns>",pod=~"<router>-predictor-.*"``
    (the labels Prometheus's usual Kubernetes pod scrape config adds)."""
    ttft_slo_ms: float = Field(1000.0, gt=0)
    """The deployment's TTFT target: the router's ``--ttft-slo-ms``."""
    ttft_target: float = Field(0.8, gt=0)
    """Predicted TTFT as a share of ``ttft_slo_ms`` that a pool aims at (above it: more replicas)."""
    queue_per_replica: float = Field(4.0, gt=0)
    """Requests waiting in the router (non-sheddable bands, priority >= 0) per engine replica."""
    band_queue_per_replica: dict[int, float] = Field(default_factory=dict)
    """Priority band -> waiting requests of that band per replica: an extra, tighter trigger per band."""
    kv_usage_target: float = Field(0.7, gt=0, le=1)
    """Mean KV-cache usage of the decode (or aggregated) pool's ready replicas."""
    prefill: ReplicaRange = ReplicaRange(min=1, max=4)
    decode: ReplicaRange = ReplicaRange(min=1, max=8)
    """The decode pool; in aggregated mode, the one engine pool."""
    polling_interval_s: int = Field(15, ge=1)
    cooldown_s: int = Field(300, ge=0)
    """KEDA's ``cooldownPeriod`` (applies to scaling to zero only, which ``min >= 1`` rules out; the HPA's
    ``behavior`` paces everything else)."""
    fallback_failures: int = Field(3, ge=1)
    """After this many failed Prometheus queries KEDA holds each pool at its spec's ``replicas``."""
    behavior: ScalingBehavior = ScalingBehavior()

    @field_validator("band_queue_per_replica")
    @classmethod
    def _bands(cls, v: dict[int, float]) -> dict[int, float]:
        for band, n in v.items():
            if not -100 <= band <= 100 or not n > 0:
                raise ValueError(f"band {band}: bands are -100..100 and thresholds > 0")
        return v


class DeploymentSpec(_Model):
    """Everything :func:`llmd_kserve.kube.render.render` needs to produce the Kubernetes objects."""

    name: str = "llmd"
    namespace: str = "llmd"
    mode: Mode = "sim"
    """``sim``: simulated engines (our image, no GPU) in a prefill/decode split; ``aggregated``: one vLLM pool
    (role both); ``pd``: vLLM prefill and decode pools joined by NixlConnector."""
    model: ModelSource = ModelSource()
    prefill: PoolSpec = PoolSpec(replicas=1)
    decode: PoolSpec = PoolSpec(replicas=2)
    """The decode pool; in aggregated mode, the one engine pool."""
    router: RouterSpec = RouterSpec()
    epp: EppSpec = EppSpec()
    """The Endpoint Picker (Gateway API form only)."""
    kv_transfer: KVTransferSpec = KVTransferSpec()
    kv_events: KVEventsSpec = KVEventsSpec()
    images: Images = Images()
    engine_port: int = Field(8000, ge=1, le=65535)
    block_size: int = Field(16, ge=1)
    """KV block size passed to every engine; the router hashes prefixes with the same size."""
    sim_profile: str = DEFAULT_PROFILE
    """Latency profile of simulated engines (sim mode)."""
    autoscaling: AutoscalingSpec = AutoscalingSpec()
    """KEDA ScaledObjects on the router's signals (off by default: fixed replicas)."""

    @field_validator("name", "namespace")
    @classmethod
    def _dns_label(cls, v: str) -> str:
        if not _DNS_LABEL.match(v) or len(v) > 40:
            raise ValueError(f"must be a DNS label of at most 40 characters, got {v!r}")
        return v

    # --- derived ------------------------------------------------------------------------------------------------
    @property
    def simulated(self) -> bool:
        return self.mode == "sim"

    @property
    def disaggregated(self) -> bool:
        return self.mode in ("pd", "sim")

    @property
    def router_config(self) -> str | dict[str, Any]:
        """The scheduler config the router runs: the spec's, or the mode's default."""
        if self.router.config is not None:
            return self.router.config
        return "pd-predicted-ttft" if self.disaggregated else "default"

    @property
    def roles(self) -> tuple[str, ...]:
        """Engine pools to render, by llm-d role."""
        return ("prefill", "decode") if self.disaggregated else ("both",)

    def pool(self, role: str) -> PoolSpec:
        return self.prefill if role == "prefill" else self.decode

    def pool_name(self, role: str) -> str:
        return f"{self.name}-{'engine' if role == 'both' else role}"

    @property
    def runtime_name(self) -> str:
        return f"{self.name}-{'sim' if self.simulated else 'vllm'}"

    @property
    def router_name(self) -> str:
        return f"{self.name}-router"

    @property
    def config_map_name(self) -> str:
        return f"{self.name}-router-config"

    @property
    def service_account_name(self) -> str:
        return f"{self.name}-router"

    @property
    def discover_selector(self) -> str:
        return f"{POOL_LABEL}={self.name}"

    @property
    def router_tokenizer(self) -> str:
        return self.router.tokenizer or ("sim" if self.simulated else "render")

    @property
    def autoscaled(self) -> bool:
        return self.autoscaling.enabled

    def with_mode(self, mode: Mode) -> DeploymentSpec:
        return self.model_copy(update={"mode": mode})


def load_spec(path: str | Path) -> DeploymentSpec:
    """A YAML/JSON deployment spec file -> :class:`DeploymentSpec` (errors name the bad field)."""
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read deployment spec: {exc}", str(path)) from exc
    return parse_spec(data, source=str(path))


def parse_spec(data: Any, source: str = "spec") -> DeploymentSpec:
    try:
        return DeploymentSpec.model_validate(data)
    except ValidationError as exc:
        raise config_error_from(exc, f"{source}:") from exc
