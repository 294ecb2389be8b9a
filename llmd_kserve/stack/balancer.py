"""Envoy as the balancer in front of N router replicas (``up --routers N``): its bootstrap and a health wait.

It reuses the gateway bootstrap's pieces (``llmd_kserve.epp.envoy``: listener options, circuit breakers, the
OpenAI-shaped bodies of Envoy's own error replies, the command line). One route sends every path but ``/admin/``
to the ``routers`` cluster:

* round-robin or least-request over the replicas; active HTTP health checks on each replica's ``/ready`` (every
  second; out after 2 failures, back after 1 success) and no panic routing, so a replica that is down, draining or
  still warming its KV index gets no new requests;
* passive outlier detection on connection failures only: a replica that refuses a connection is left out at once
  (2 s, at most half the replicas), before the next health check sees it;
* retries on ``connect-failure,refused-stream,reset`` on another replica (``previous_hosts``), under a retry budget
  (20% of the requests in flight, at least 16 at a time). Envoy retries only before any response byte reached the client, so
  a client never gets two answers; a request that a dying replica had already admitted can be admitted twice
  (its reservation on the dead replica expires, only answered tokens are charged; see docs/replicas.md);
* each answer names its replica in ``x-llmd-router`` (``host:port``);
* ``/admin/*`` is not forwarded (each replica's admin API trusts loopback clients, and every client of the balancer
  would look like one): reach a replica's own URL for it.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from llmd_kserve.epp.envoy import (
    CIRCUIT_BREAKERS,
    ENVOY_ERRORS,
    HCM_TYPE,
    LONG_TIMEOUT,
    ROUTER_FILTER_TYPE,
    error_json,
    local_reply_mapper,
    socket_address,
    split_host_port,
)
from llmd_kserve.errors import LlmdError

_PREVIOUS_HOSTS = "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
RETRY_ON = "connect-failure,refused-stream,reset"
ROUTER_HEADER = "x-llmd-router"
"""Response header naming the replica (``host:port``) that answered."""
_ADMIN_NOT_HERE = error_json(404, "NotFoundError", "The admin API is not served through the balancer: use a router "
                                                    "replica's own URL (llmd-kserve up --state-file lists them).")
LbPolicy = Literal["round-robin", "least-request"]


@dataclass(frozen=True, slots=True)
class BalancerConfig:
    """One listener balancing over router replicas (``host:port`` each); :meth:`bootstrap` renders Envoy's config."""

    routers: tuple[str, ...]
    host: str = "127.0.0.1"
    port: int = 0
    admin_port: int = 0
    lb_policy: LbPolicy = "round-robin"
    retries: int = 2
    retry_budget_percent: float = 20.0
    min_retry_concurrency: int = 16
    """Retries in flight allowed whatever the budget (a retried stream counts until it ends: at a replica's death,
    every request that was about to go to it is retried at once)."""
    health_path: str = "/ready"
    max_body_bytes: int = 16 << 20
    """Request bodies up to this size are buffered, so that a request can be retried on another replica."""

    def _cluster(self) -> dict[str, Any]:
        breakers = {k: v for k, v in CIRCUIT_BREAKERS["thresholds"][0].items() if k != "max_retries"}
        breakers["retry_budget"] = {"budget_percent": {"value": self.retry_budget_percent},
                                    "min_retry_concurrency": self.min_retry_concurrency}
        return {
            "name": "routers", "type": "STATIC", "connect_timeout": "1s",
            "lb_policy": "LEAST_REQUEST" if self.lb_policy == "least-request" else "ROUND_ROBIN",
            "circuit_breakers": {"thresholds": [breakers]},
            "load_assignment": {"cluster_name": "routers", "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": socket_address(*split_host_port(r))}} for r in self.routers]}]},
            "health_checks": [{"timeout": "1s", "interval": "1s", "no_traffic_interval": "1s",
                               "unhealthy_threshold": 2, "healthy_threshold": 1,
                               "http_health_check": {"path": self.health_path}}],
            "common_lb_config": {"healthy_panic_threshold": {"value": 0}},
            # a replica that refuses or resets connections is left out at once, between two health checks; its
            # answers (a 503 while Redis is down, a 429) never eject it
            "outlier_detection": {"split_external_local_origin_errors": True, "consecutive_local_origin_failure": 1,
                                  "enforcing_consecutive_local_origin_failure": 100, "enforcing_consecutive_5xx": 0,
                                  "enforcing_consecutive_gateway_failure": 0, "enforcing_success_rate": 0,
                                  "enforcing_local_origin_success_rate": 0, "enforcing_failure_percentage": 0,
                                  "enforcing_failure_percentage_local_origin": 0, "interval": "1s",
                                  "base_ejection_time": "2s", "max_ejection_percent": 50},
        }

    def bootstrap(self) -> dict[str, Any]:
        retry = {"retry_on": RETRY_ON, "num_retries": self.retries, "host_selection_retry_max_attempts": 5,
                 "retry_host_predicate": [{"name": "envoy.retry_host_predicates.previous_hosts",
                                           "typed_config": {"@type": _PREVIOUS_HOSTS}}]}
        routes = [
            {"match": {"prefix": "/admin/"}, "direct_response": {"status": 404, "body": {"inline_string": _ADMIN_NOT_HERE}}},
            {"match": {"prefix": "/"}, "route": {"cluster": "routers", "timeout": "0s", "idle_timeout": LONG_TIMEOUT,
                                                 "retry_policy": retry},
             "request_body_buffer_limit": str(self.max_body_bytes),
             "response_headers_to_add": [{"header": {"key": ROUTER_HEADER, "value": "%UPSTREAM_REMOTE_ADDRESS%"},
                                          "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}]},
        ]
        hcm = {
            "@type": HCM_TYPE, "stat_prefix": "balancer", "codec_type": "AUTO",
            "stream_idle_timeout": LONG_TIMEOUT, "request_timeout": "0s", "generate_request_id": False,
            "normalize_path": True, "merge_slashes": True, "path_with_escaped_slashes_action": "REJECT_REQUEST",
            "http_protocol_options": {"accept_http_10": True, "default_host_for_http_10": "balancer"},
            "local_reply_config": {"mappers": [local_reply_mapper(c, t) for c, t in ENVOY_ERRORS.items()]},
            "route_config": {"name": "routers", "virtual_hosts": [{"name": "routers", "domains": ["*"],
                                                                   "routes": routes}]},
            "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER_FILTER_TYPE}}],
        }
        return {
            "admin": {"address": socket_address("127.0.0.1", self.admin_port)},
            "static_resources": {
                "listeners": [{"name": "balancer", "address": socket_address(self.host, self.port),
                               "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                                               "typed_config": hcm}]}]}],
                "clusters": [self._cluster()],
            },
        }


def healthy_routers(admin_url: str) -> list[str]:
    """``host:port`` of the replicas Envoy's health checks pass now (its admin ``/clusters``)."""
    with urllib.request.urlopen(admin_url + "/clusters?format=json", timeout=2) as r:
        data = json.load(r)
    out = []
    for cluster in data.get("cluster_statuses", []):
        if cluster.get("name") != "routers":
            continue
        for host in cluster.get("host_statuses", []):
            addr = host.get("address", {}).get("socket_address", {})
            if not host.get("health_status", {}).get("failed_active_health_check"):
                out.append(f"{addr.get('address')}:{addr.get('port_value')}")
    return out


def wait_balanced(admin_url: str, routers: Sequence[str], timeout: float) -> None:
    """Wait until Envoy's health checks pass for every replica; LlmdError after ``timeout``."""
    deadline = time.monotonic() + timeout
    healthy: list[str] = []
    while time.monotonic() < deadline:
        try:
            healthy = healthy_routers(admin_url)
        except OSError:
            healthy = []
        if set(routers) <= set(healthy):
            return
        time.sleep(0.1)
    raise LlmdError(f"the balancer's health checks did not pass for {sorted(set(routers) - set(healthy))} "
                    f"in {timeout:g}s")
