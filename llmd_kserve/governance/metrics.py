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
        self.audit_seq = Gauge("audit_head_seq", "Sequence number of the last audit record in the file (the chain's "
                               "anchor)", namespace=ns, registry=registry)
        self.audit_failures = Counter("audit_write_failures", "Audit writes or fsyncs that failed (requests waiting "
                                      "on them were refused)", namespace=ns, registry=registry)
        self.audit_failing = Gauge("audit_write_failing", "1 while the last audit write failed (new requests are "
                                   "refused until one succeeds)", namespace=ns, registry=registry)
        self.key_reloads = Counter("keys_reloads", "Keys file reloads", ["result"], namespace=ns, registry=registry)

    def audit_written(self, seq: int) -> None:
        """The audit trail's hook after a batch reached the file."""
        self.audit_seq.set(seq)
        self.audit_failing.set(0)

    def audit_failed(self) -> None:
        """The audit trail's hook after a failed write or fsync."""
        self.audit_failures.inc()
        self.audit_failing.set(1)

    def tenant(self, name: str) -> str:
        known = self._known()
        return name if name in known[:MAX_TENANT_LABELS] else "other"
