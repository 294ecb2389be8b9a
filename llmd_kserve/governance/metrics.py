"""Per-tenant gateway metrics; the tenant label is bounded (tenants of the keys file, at most 64; else ``other``)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

MAX_TENANT_LABELS = 64
_WAIT_BUCKETS = (1e-3, 5e-3, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0)


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry, known_tenants: Callable[[], list[str]]) -> None:
        ns = "llmd_gateway"
        self._known = known_tenants
        self.requests = Counter("requests", "Governed requests by tenant and outcome", ["tenant", "outcome"],
                                namespace=ns, registry=registry)
        self.tokens = Counter("tokens", "Tokens metered from engine usage by tenant", ["tenant", "kind"],
                              namespace=ns, registry=registry)
        self.queue_wait = Histogram("queue_wait_seconds", "Time requests waited in the flow-control queue",
                                    ["band"], buckets=_WAIT_BUCKETS, namespace=ns, registry=registry)
        self.queue_depth = Gauge("queue_depth", "Requests waiting in the flow-control queue", ["band"],
                                 namespace=ns, registry=registry)
        self.in_flight = Gauge("in_flight", "Requests dispatched by flow control and not finished", namespace=ns,
                               registry=registry)
        self.audit_seq = Gauge("audit_head_seq", "Sequence number of the last audit record (the chain's anchor)",
                               namespace=ns, registry=registry)
        self.audit_failures = Counter("audit_write_failures", "Audit batches that failed to reach the disk",
                                      namespace=ns, registry=registry)
        self.key_reloads = Counter("keys_reloads", "Keys file reloads", ["result"], namespace=ns, registry=registry)

    def tenant(self, name: str) -> str:
        known = self._known()
        return name if name in known[:MAX_TENANT_LABELS] else "other"
