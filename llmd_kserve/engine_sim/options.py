"""The simulated engine's options (what ``llmd-kserve engine`` accepts) and their validation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import get_args

from llmd_kserve.defaults import DEFAULT_MODEL, DEFAULT_PROFILE
from llmd_kserve.errors import ConfigError
from llmd_kserve.latency import VllmVersion
from llmd_kserve.types import Role


@dataclass(frozen=True, slots=True)
class EngineOptions:
    """Everything ``llmd-kserve engine`` accepts (None: the profile's value)."""

    host: str = "127.0.0.1"
    port: int = 0
    model: str = DEFAULT_MODEL
    profile: str = DEFAULT_PROFILE
    num_blocks: int | None = None
    block_size: int | None = None
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    max_model_len: int | None = None
    async_scheduling: bool | None = None
    """vLLM's ``--async-scheduling``: step N+1 is scheduled while step N runs (None: the profile's)."""
    vllm_version: VllmVersion | None = None
    """Whose rules to follow where vLLM versions differ: "0.26" or "0.32" (None: the profile's)."""
    kv_events_endpoint: str | None = None
    kv_events_topic: str | None = None
    kv_events_replay_endpoint: str | None = None
    """vLLM's ``replay_endpoint``: a ROUTER socket resending buffered KV-event messages from a sequence number."""
    role: Role = "both"
    kv_link_gbps: float | None = None
    kv_lease_s: float = 480.0
    kv_connector: bool = True
    """False: ignore ``kv_transfer_params`` and answer ``null`` (vLLM without a KV connector)."""
    time_scale: float = 1.0
    seed: int = 0
    error_rate: float = 0.0
    crash_after: int | None = None
    crash_exits_process: bool = False
    hang_after: int | None = None
    """Fault: after N requests generation stops for good (a hung engine) while ``/health`` and ``/metrics`` answer."""
    slow_start: float = 0.0
    default_output_len: int = 128
    tokenizer: str | None = None
    advertise_host: str | None = None


def check_options(o: EngineOptions) -> None:
    """Reject option values the engine cannot run with, naming the option (ConfigError)."""
    if not 0 <= o.port <= 65535:
        raise ConfigError(f"must be 0..65535, got {o.port}", "port")
    for name in ("num_blocks", "block_size", "max_num_seqs", "max_num_batched_tokens", "max_model_len",
                 "default_output_len", "crash_after"):
        v = getattr(o, name)
        if v is not None and v < 1:
            raise ConfigError(f"must be >= 1, got {v}", name)
    for name in ("time_scale", "slow_start", "kv_lease_s"):
        if getattr(o, name) < 0:
            raise ConfigError(f"must be >= 0, got {getattr(o, name)}", name)
    if o.hang_after is not None and o.hang_after < 0:
        raise ConfigError(f"must be >= 0, got {o.hang_after}", "hang_after")
    if not 0.0 <= o.error_rate <= 1.0:
        raise ConfigError(f"must be in [0, 1], got {o.error_rate}", "error_rate")
    if o.num_blocks == 1:
        raise ConfigError("must be >= 2 (block 0 is vLLM's null block, never allocated)", "num_blocks")
    if o.kv_link_gbps is not None and o.kv_link_gbps <= 0:
        raise ConfigError(f"must be > 0, got {o.kv_link_gbps}", "kv_link_gbps")
    if o.vllm_version not in (None, *get_args(VllmVersion)):
        raise ConfigError(f"must be one of {', '.join(get_args(VllmVersion))}, got {o.vllm_version!r}", "vllm_version")
