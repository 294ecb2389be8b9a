"""Assemble a ``Gateway`` from file paths and numbers (what ``RouterSettings`` carries)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

from llmd_kserve.errors import ConfigError
from llmd_kserve.governance.audit import AuditLog
from llmd_kserve.governance.flow import FlowController, FlowPolicy, FlowQueue
from llmd_kserve.governance.gateway import Gateway
from llmd_kserve.governance.guardrails import load_guardrails
from llmd_kserve.governance.keys import KeyStore
from llmd_kserve.governance.metrics import GatewayMetrics
from llmd_kserve.governance.shared_state import FailurePolicy, SharedLimiter
from llmd_kserve.governance.trail import AuditTrail
from llmd_kserve.state_store import StateStore


def build_gateway(*, keys_file: str | Path | None = None, legacy_keys: Collection[str] = (),
                  guardrails_file: str | Path | None = None, audit_file: str | Path | None = None,
                  audit_content: str = "hash", audit_fsync: str = "every", audit_fsync_interval: float = 1.0,
                  audit_max_bytes: int | None = None, audit_max_age_s: float | None = None,
                  flow_capacity: Callable[[], int] | None = None, flow_band_capacity: int = 1024,
                  flow_ttl_s: float = 30.0, flow_headroom: int = 1, turn_priority: bool = True,
                  salt: bytes | None = None,
                  registry: Any = None, audit_chain_key: bytes | None = None, state_url: str | None = None,
                  state_failure_policy: str = "closed") -> Gateway:
    """``state_url``: rate limits, budgets and token spend in that Redis (shared with other replicas), else in
    memory. Without ``flow_capacity`` (no flow control) but with a keys file, a queue of unbounded capacity still holds
    each key to its ``max_concurrency``: over it a request is refused at once (429 ``concurrency``)."""
    policy = FailurePolicy.parse(state_failure_policy)
    keys = KeyStore(Path(keys_file) if keys_file else None, tuple(legacy_keys))
    if audit_fsync not in ("every", "interval"):
        raise ConfigError(f"must be every or interval, got {audit_fsync!r}", "audit_fsync")
    if audit_content not in ("hash", "full"):
        raise ConfigError(f"must be hash or full, got {audit_content!r}", "audit")
    trail = None
    if audit_file:
        try:
            trail = AuditTrail(AuditLog(Path(audit_file), audit_max_bytes, audit_max_age_s,
                                        chain_key=audit_chain_key), audit_fsync, audit_fsync_interval)  # type: ignore[arg-type]
        except OSError as exc:
            raise ConfigError(f"cannot open the audit log: {exc.strerror or exc}", str(audit_file)) from None
    flow = None
    if flow_headroom < 0:
        raise ConfigError(f"must be >= 0, got {flow_headroom}", "flow_headroom")
    if flow_capacity is not None:
        flow = FlowController(FlowQueue(flow_capacity, FlowPolicy(flow_band_capacity, flow_ttl_s,
                                                                  headroom=flow_headroom,
                                                                  turn_priority=turn_priority)))
    elif keys_file:
        flow = FlowController(FlowQueue(lambda: sys.maxsize, FlowPolicy(fair_share=False, headroom=0,
                                                                         wait_for_key_slot=False)))
    metrics = GatewayMetrics(registry, keys.tenants) if registry is not None else None
    if metrics is not None:  # "refused": the file changed but could not be applied (counted on every poll)
        keys.on_reload = lambda ok: metrics.key_reloads.labels("applied" if ok else "refused").inc()
        if trail is not None:
            metrics.audit_seq.set(trail.log.seq)
            trail.on_commit, trail.on_failure = metrics.audit_written, metrics.audit_failed
    shared = SharedLimiter(StateStore(state_url, registry), policy) if state_url else None
    return Gateway(keys, flow=flow, guardrails=load_guardrails(guardrails_file) if guardrails_file else None,
                   trail=trail, audit_content=audit_content, salt=salt, metrics=metrics,  # type: ignore[arg-type]
                   shared=shared)
