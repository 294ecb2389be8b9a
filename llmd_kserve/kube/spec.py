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
