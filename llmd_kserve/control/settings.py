"""What ``llmd-kserve router``/``epp`` can be told about the runtime (besides its endpoints), and the governance
pipeline those settings describe."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from llmd_kserve.defaults import (
    DEFAULT_CONFIG,
    DEFAULT_PROFILE,
    MAX_PROMPT_CHARS,
    SCRAPE_INTERVAL_S,
    STALL_FACTOR,
    STALL_FLOOR_S,
)
from llmd_kserve.errors import ConfigError
from llmd_kserve.governance.build import build_gateway
from llmd_kserve.governance.gateway import Gateway
from llmd_kserve.governance.pipeline import AuditMode, BearerTokenAuth, Governance, Limits
from llmd_kserve.governance.shared_state import FailurePolicy

DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class RouterSettings:
    """Everything ``llmd-kserve router`` can be told (besides its endpoints)."""

    config: str | Path = DEFAULT_CONFIG
    """Shipped scheduler config name or an EndpointPickerConfig YAML file."""
    scrape_interval: float = SCRAPE_INTERVAL_S
    scrape_idle_interval: float | None = 5.0
    """Seconds between /metrics polls of an endpoint with no request on it for 1 s (None: none while idle; the
    first request after an idle spell scrapes first). ``scrape_interval`` or less: fixed-rate polling."""
    scrape_max_rate: float | None = 400.0
    """At most this many /metrics polls per second over all active endpoints (their interval stretches)."""
    tokenizer: str | None = None
    """``None``/``"sim"``: local SimTokenizer; ``"render"``: the engines' ``/render`` endpoints (else their
    ``/tokenize``); else a model directory or its ``tokenizer.json`` (the model's own ids and chat template)."""
    seed: int = 0
    profile: str = DEFAULT_PROFILE
    """Latency profile the predicted-TTFT scorer uses."""
    block_size: int | None = None
    """KV block size of every endpoint; None: each engine's own (its KV events', else its ``cache_config_info``)."""
    kv_index_max_keys: int = 4_000_000
    max_attempts: int = 3
    """Upstream attempts per request (1 + retries on other endpoints when an upstream fails before the first byte)."""
    api_keys: tuple[str, ...] = ()
    """Plain bearer tokens (``--api-keys-file``): operator keys, accepted on every route (tenants get virtual keys)."""
    audit: AuditMode = "off"
    max_prompt_chars: int | None = MAX_PROMPT_CHARS
    """Characters of every string the engine renders (None: no limit)."""
    served_models: tuple[str, ...] = ()
    """Model names to accept and list; empty: whatever the endpoints' ``/v1/models`` say (any, until known)."""
    decisions_size: int = 256
    endpoints_poll_interval: float = 1.0
    models_refresh_interval: float = 10.0
    connect_timeout: float = 5.0
    first_byte_timeout: float = 120.0
    """Seconds until an upstream's response headers (and a stream's first event); then retry elsewhere."""
    idle_timeout: float = 60.0
    """Seconds an upstream may send nothing in the middle of a response body."""
    eject_s: float = 5.0
    """First ejection of an endpoint that timed out or failed to connect (doubles while it keeps failing)."""
    stall_factor: float = STALL_FACTOR
    """A request this many times past its predicted time without a byte marks its endpoint suspect (0: off)."""
    stall_floor_s: float = STALL_FLOOR_S
    """The shortest stall budget, seconds."""
    header_timeout: float = 15.0
    """Seconds a client connection may take to send a request's headers (and may stay idle between requests)."""
    body_timeout: float = 30.0
    """Seconds a client may take to send a request's body."""
    drain_timeout: float = 10.0
    """On SIGINT/SIGTERM, seconds in-flight requests may still take (a second signal exits at once)."""
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_prompt_tokens: int | None = 131_072
    max_batch_size: int | None = 256
    audit_salt: str | None = None
    """Key of the audit log's prompt HMAC (hashes then correlate across restarts); None: random per process."""
    inject_stream_usage: bool = True
    http_server: str = "lean"
    """The HTTP server: ``lean`` (the OpenAI routes on a lean protocol, the rest on aiohttp) or ``aiohttp`` (all)."""
    admin: bool = False
    """Serve ``GET/POST /admin/config`` (config hot reload): an operator key when keys are configured (a virtual key
    with ``admin: true`` or an ``api_keys`` token), else loopback clients only."""
    config_poll_interval: float = 1.0
    ready_kv_grace_s: float = 5.0
    """``/ready``: seconds a connected KV-event stream may stay silent before its idle engine counts as warm."""
    """Seconds between checks of a ``config`` file for changes (reloaded without a restart)."""
    pool_name: str | None = None
    """The InferencePool this front end picks for (``epp --pool-name``): llm-d's ``inference_pool_*{name}`` gauges
    are exported under it too (None: not exported)."""
    ttft_slo_s: float | None = None
    """The deployment's TTFT target (``--ttft-slo-ms``): ``llmd_router_ttft_headroom_seconds`` is measured against
    it (None: that gauge is not exported)."""
    # --- governance (llmd_kserve.governance) ---
    keys_file: str | None = None
    """YAML file of virtual keys (``llmd-kserve keys``), reloaded on change; with ``api_keys``, both are accepted."""
    guardrails_file: str | None = None
    audit_file: str | None = None
    """Hash-chained JSONL audit trail (``audit`` hash|full says what of prompts/answers it holds; off means hash)."""
    audit_fsync: str = "every"
    audit_fsync_interval: float = 1.0
    audit_max_bytes: int | None = None
    audit_max_age_s: float | None = None
    audit_chain_key: bytes | None = None
    """Key of the audit chain's HMAC (``audit verify`` needs it too); None: the chain is plain SHA-256."""
    flow_per_endpoint: int | None = None
    """Flow control: requests in flight per endpoint before the rest queue by priority and tenant (None: off)."""
    flow_band_capacity: int = 1024
    flow_ttl_s: float = 30.0
    flow_headroom: int = 1
    """Flow-control slots only a tenant with none in flight may take (a flooding tenant leaves them free)."""
    turn_priority: bool = True
    """Flow control: a queued turn of a live session goes before a new session's first turn (same band)."""
    state_url: str | None = None
    """``redis://host:port/db``: rate limits, budgets and token spend kept there, shared by replicas (None: memory)."""
    state_failure_policy: str = "closed"
    """When Redis is unreachable: closed (503) or open (unchecked), or per kind ``budget=closed,rate=open``."""
    shared_sessions: bool = False
    """Keep session homes and response-id pins in the ``state_url`` Redis too (shared by replicas; fail open)."""

    def __post_init__(self) -> None:
        for name in ("scrape_interval", "endpoints_poll_interval", "models_refresh_interval", "connect_timeout",
                     "first_byte_timeout", "idle_timeout", "eject_s", "header_timeout", "body_timeout",
                     "drain_timeout", "config_poll_interval"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"must be > 0, got {getattr(self, name)}", name)
        for name in ("max_attempts", "block_size", "kv_index_max_keys", "decisions_size", "max_prompt_chars",
                     "max_body_bytes", "max_prompt_tokens", "max_batch_size"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ConfigError(f"must be >= 1, got {v}", name)
        if not self.ready_kv_grace_s >= 0:
            raise ConfigError(f"must be >= 0, got {self.ready_kv_grace_s}", "ready_kv_grace_s")
        if not self.stall_factor >= 0:
            raise ConfigError(f"must be >= 0 (0: off), got {self.stall_factor}", "stall_factor")
        if not self.stall_floor_s > 0:
            raise ConfigError(f"must be > 0, got {self.stall_floor_s}", "stall_floor_s")
        for name in ("scrape_idle_interval", "scrape_max_rate", "ttft_slo_s"):
            if getattr(self, name) is not None and not getattr(self, name) > 0:
                raise ConfigError(f"must be > 0 (or unset), got {getattr(self, name)}", name)
        if self.http_server not in ("lean", "aiohttp"):
            raise ConfigError(f"must be lean or aiohttp, got {self.http_server!r}", "http_server")
        if self.audit not in ("off", "hash", "full"):
            raise ConfigError(f"must be off, hash or full, got {self.audit!r}", "audit")
        FailurePolicy.parse(self.state_failure_policy)
        if self.shared_sessions and not self.state_url:
            raise ConfigError("shared sessions need a shared store: give --state-url redis://host:port/db",
                              "shared_sessions")


class _KeyStoreAuth:
    """``AuthHook`` over the gateway's key store (virtual keys and plain tokens); the principal is the key id."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def check(self, headers: Mapping[str, str]) -> str | None:
        key = self.gateway.authenticate(headers)
        return key.id if key is not None else None


def gateway_of(s: RouterSettings, registry: Any = None, pool_size: Callable[[], int] = lambda: 1) -> Gateway:
    """The settings' virtual keys, guardrails, flow control and audit trail."""
    per = s.flow_per_endpoint
    return build_gateway(
        keys_file=s.keys_file, legacy_keys=s.api_keys, guardrails_file=s.guardrails_file, audit_file=s.audit_file,
        audit_content="full" if s.audit == "full" else "hash", audit_fsync=s.audit_fsync,
        audit_fsync_interval=s.audit_fsync_interval, audit_max_bytes=s.audit_max_bytes,
        audit_max_age_s=s.audit_max_age_s, flow_band_capacity=s.flow_band_capacity, flow_ttl_s=s.flow_ttl_s,
        flow_headroom=s.flow_headroom, turn_priority=s.turn_priority,
        flow_capacity=(lambda: per * max(1, pool_size())) if per else None,
        salt=s.audit_salt.encode() if s.audit_salt else None, registry=registry, audit_chain_key=s.audit_chain_key,
        state_url=s.state_url, state_failure_policy=s.state_failure_policy)


def governance_of(s: RouterSettings, gateway: Gateway | None = None) -> Governance:
    """The settings' one governance pipeline: auth, limits, the audit line, and ``gateway``'s parts."""
    limits = Limits(s.max_prompt_chars, s.max_prompt_tokens, s.max_batch_size)
    if gateway is not None and gateway.keys is not None and gateway.keys.enabled:
        auth: Any = _KeyStoreAuth(gateway)
    else:
        auth = BearerTokenAuth(s.api_keys) if s.api_keys else None
    if s.audit_file:  # the JSONL trail replaces the logger lines
        s = replace(s, audit="off")
    gateway = gateway if gateway is not None else Gateway()
    if s.audit_salt:
        return Governance(auth, limits, s.audit, s.audit_salt.encode(), gateway, s.api_keys)
    return Governance(auth, limits, s.audit, gateway=gateway, operator_tokens=s.api_keys)
