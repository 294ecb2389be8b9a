"""M7: an emptied endpoints file keeps the old pool and logs an error. M8: with API keys every route but /health
needs one; router and engine bind loopback unless told otherwise; the manifests say 0.0.0.0 explicitly."""

from __future__ import annotations

import json

import pytest

from llmd_kserve.cli import build_parser
from tests.faults.procs import engine, request, router, running, wait_for

pytestmark = pytest.mark.slow  # real processes and sockets: the full suite runs them, the fast loop does not


def test_emptied_endpoints_file_keeps_the_pool(tmp_path):
    eng = engine(tmp_path, "e0")
    with running(eng):
        f = tmp_path / "eps.yaml"
        f.write_text(f"- {eng.url}\n")
        r = router(tmp_path, "", "--endpoints-file", str(f))
        with running(r):
            assert wait_for(lambda: request(r.url + "/health")[0] == 200)
            f.write_text("")
            assert wait_for(lambda: "ERROR" in r.output() and "endpoints file is empty" in r.output())
            status, body, _ = request(r.url + "/health")
            assert status == 200 and json.loads(body)["endpoints"] == 1
            assert request(r.url + "/v1/completions", {"prompt": "hi", "max_tokens": 2})[0] == 200
            f.write_text("endpoints: []\n")  # an empty pool, said explicitly
            assert wait_for(lambda: json.loads(request(r.url + "/health")[1])["endpoints"] == 0)


def test_every_route_but_health_needs_a_key(tmp_path):
    keys = tmp_path / "keys.txt"
    keys.write_text("k-123\n")
    eng = engine(tmp_path, "e0", kv=True)
    with running(eng):
        r = router(tmp_path, eng.url, "--api-keys-file", str(keys), "--audit", "full")
        with running(r):
            for path in ("/metrics", "/debug/decisions", "/debug/endpoints", "/v1/models", "/nope"):
                status, body, _ = request(r.url + path)
                assert status == 401 and json.loads(body)["error"]["type"] == "AuthenticationError", path
                assert request(r.url + path, headers={"Authorization": "Bearer k-123"})[0] in (200, 404)
            assert request(r.url + "/health")[0] == 200
            assert request(r.url + "/v1/completions", {"prompt": "hi", "max_tokens": 2})[0] == 401


def _listening(port: int) -> set[str]:
    """Local addresses (hex, as in /proc/net/tcp) listening on ``port``."""
    out = set()
    lines = []
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(name) as f:
            lines += f.readlines()[1:]
    for line in lines:
        local, state = line.split()[1], line.split()[3]
        addr, p = local.rsplit(":", 1)
        if state == "0A" and int(p, 16) == port:
            out.add(addr)
    return out


def test_router_and_engine_bind_loopback_by_default(tmp_path):
    p = build_parser()
    assert p.parse_args(["router", "--endpoints", "http://x:1"]).host == "127.0.0.1"
    assert p.parse_args(["engine"]).host == "127.0.0.1"
    from tests.faults.procs import Proc, cli

    eng = Proc(cli("engine", "--port", "0", "--time-scale", "0.05"), tmp_path / "e.log", ready="engine ready")
    with running(eng):
        r = Proc(cli("router", "--port", "0", "--endpoints", eng.url), tmp_path / "r.log", ready="listening on")
        with running(r):
            for url in (eng.url, r.url):
                assert _listening(int(url.rsplit(":", 1)[1])) == {"0100007F"}, url


def test_manifests_listen_on_all_interfaces_explicitly():
    from pathlib import Path

    from llmd_kserve.kube.render import render, to_yaml
    from llmd_kserve.kube.spec import DeploymentSpec

    for mode in ("sim", "aggregated", "pd"):
        docs = [to_yaml(o) for o in render(DeploymentSpec().with_mode(mode))]
        hosts = [d for d in docs if "--host=0.0.0.0" in d]
        kinds = {d.split("kind: ", 1)[1].split()[0] for d in hosts}
        assert {"ServingRuntime", "InferenceService"} <= kinds, (mode, kinds)  # engines and the router
        root = Path(__file__).resolve().parents[2] / "manifests" / "overlays" / mode
        committed = "\n".join(p.read_text() for p in root.glob("*.yaml"))
        assert committed.count("--host=0.0.0.0") >= 2, mode
