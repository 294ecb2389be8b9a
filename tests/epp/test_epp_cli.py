"""``llmd-kserve epp`` / ``pd-sidecar`` refuse bad input with one line and exit 2; a real EPP process drains on
SIGTERM (readiness NOT_SERVING, then exit 0)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from llmd_kserve.stack.procs import free_port
from tests.test_cli_errors import _assert_one_line_error, _cli

pytestmark = pytest.mark.slow  # real processes and sockets: the full suite runs them, the fast loop does not


def test_epp_needs_endpoints():
    _assert_one_line_error(_cli("epp", "--grpc-port", "0", "--metrics-port", "0"), "epp", "--endpoints")


def test_epp_bad_target_ports_and_response_mode():
    _assert_one_line_error(_cli("epp", "--endpoints", "http://127.0.0.1:1", "--target-ports", "80,x"), "epp",
                           "target-ports")
    res = _cli("epp", "--endpoints", "http://127.0.0.1:1", "--response-mode", "bodies")
    assert res.returncode == 2 and "invalid choice" in res.stderr


def test_epp_takes_the_routers_governance_options(tmp_path):
    """The same --keys-file, --api-keys-file, --audit-file options as ``router``: a bad keys file is refused at start."""
    bad = tmp_path / "keys.yaml"
    bad.write_text("")
    _assert_one_line_error(_cli("epp", "--grpc-port", "0", "--metrics-port", "0", "--endpoints", "http://127.0.0.1:1",
                                "--keys-file", str(bad)), "epp", "keys.yaml")
    _assert_one_line_error(_cli("epp", "--grpc-port", "0", "--metrics-port", "0", "--endpoints", "http://127.0.0.1:1",
                                "--api-keys-file", str(tmp_path / "missing")), "epp", "API keys file")


def test_epp_busy_grpc_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        res = _cli("epp", "--host", "127.0.0.1", "--grpc-port", str(port), "--metrics-port", "0",
                   "--endpoints", "http://127.0.0.1:1")
    _assert_one_line_error(res, "epp", "cannot listen")


def test_pd_sidecar_needs_prefill_endpoints():
    _assert_one_line_error(_cli("pd-sidecar", "--port", "0", "--decode", "http://127.0.0.1:1",
                                "--prefill-endpoints", ","), "pd-sidecar", "prefill")


@pytest.mark.slow
def test_epp_process_drains_on_sigterm():
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "llmd_kserve.cli", "epp", "--host", "127.0.0.1", "--grpc-port",
                             str(port), "--metrics-port", "0", "--endpoints", "http://127.0.0.1:1",
                             "--drain-timeout", "5"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "LLMD_LOG_LEVEL": "INFO"})
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            deadline = time.monotonic() + 30
            while True:
                try:
                    status = stub.Check(health_pb2.HealthCheckRequest(service="readiness"), timeout=1).status
                    break
                except grpc.RpcError:
                    assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read().decode()
                    time.sleep(0.1)
            assert status == health_pb2.HealthCheckResponse.SERVING
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(20) == 0
        assert b"drained: all streams done" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_epp_leader_election_errors_are_one_line(tmp_path):
    """Lease timings client-go would refuse, and no cluster to hold the Lease in."""
    base = ("epp", "--grpc-port", "0", "--metrics-port", "0", "--endpoints", "http://127.0.0.1:1", "--leader-elect",
            "--lease-namespace", "llm")
    _assert_one_line_error(_cli(*base, "--lease-duration", "5", "--renew-deadline", "6"), "epp", "renew_deadline")
    missing = tmp_path / "no-kubeconfig"
    res = subprocess.run([sys.executable, "-m", "llmd_kserve.cli", *base], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "KUBECONFIG": str(missing)})
    _assert_one_line_error(res, "epp", "Kubernetes")


def test_epp_standby_envoy_config_lists_both_epps_with_health_checks():
    from llmd_kserve.epp.envoy import EnvoyConfig

    boot = EnvoyConfig(epp="127.0.0.1:9002", epp_standby=("127.0.0.1:9003",), health_check_interval_s=0.25).bootstrap()
    epp = next(c for c in boot["static_resources"]["clusters"] if c["name"] == "epp")
    ports = [e["endpoint"]["address"]["socket_address"]["port_value"]
             for e in epp["load_assignment"]["endpoints"][0]["lb_endpoints"]]
    assert ports == [9002, 9003]
    assert epp["health_checks"][0]["interval"] == "0.25s" and epp["health_checks"][0]["grpc_health_check"]
