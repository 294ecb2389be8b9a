"""The EPP's own Prometheus metrics, next to the scheduler's (``RouterMetrics`` under the ``llmd_epp`` namespace)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from llmd_kserve.metrics.router_metrics import RouterMetrics


class EppMetrics(RouterMetrics):
    """Scheduling metrics as the router has them, plus ext_proc stream and verdict counts."""

    def __init__(self) -> None:
        super().__init__(namespace="llmd_epp")
        r = self.registry
        self.verdicts = Counter("verdicts", "Requests by verdict: picked, or the reason they were answered directly",
                                ["verdict", "status"], namespace="llmd_epp", registry=r)
        self.streams = Counter("streams", "ext_proc streams opened by the gateway", namespace="llmd_epp", registry=r)
        self.active_streams = Gauge("active_streams", "ext_proc streams open now", namespace="llmd_epp", registry=r)
        self.served_elsewhere = Counter("served_elsewhere", "Responses the gateway reports (envoy.lb "
                                        "x-gateway-destination-endpoint-served) as served by another endpoint than "
                                        "the pick", namespace="llmd_epp", registry=r)
        self.client_params_stripped = Counter("client_params_stripped", "Requests whose client-sent "
                                              "kv_transfer_params were dropped before they reached an engine",
                                              namespace="llmd_epp", registry=r)
        self.leader = Gauge("leader", "1 while this replica serves picks (it holds the Lease, or runs without "
                            "leader election); 0 on a standby", namespace="llmd_epp", registry=r)
        self.leader_transitions = Counter("leader_transitions", "Times this replica became the leader",
                                          namespace="llmd_epp", registry=r)
        self.stream_errors = Counter("stream_errors", "ext_proc streams that ended in an error", ["kind"],
                                     namespace="llmd_epp", registry=r)
