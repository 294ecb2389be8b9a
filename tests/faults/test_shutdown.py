"""M1: ``up`` stops on SIGINT even when it inherited SIGINT as ignored. L7: the router drains for a bounded time on
SIGTERM, says so, and a second signal exits at once."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request

import pytest

from tests.faults.procs import ROOT, engine, router, running, wait_for
from tests.test_stack import _alive, _children

pytestmark = pytest.mark.slow  # real processes and sockets: the full suite runs them, the fast loop does not


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # what a background job of a script, or nohup, inherits


def _sig_ignored(pid: int, sig: int) -> bool:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("SigIgn:"):
                return bool(int(line.split()[1], 16) & (1 << (sig - 1)))
    return False


def test_up_stops_on_sigint_inherited_as_ignored(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "llmd_kserve.cli", "up", "--engines", "1", "--port", "0",
                             "--no-prometheus"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=_ignore_sigint, cwd=ROOT)
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if "Ctrl-C stops everything" in line:
                break
        assert proc.poll() is None, "".join(lines)
        kids = _children(proc.pid)
        assert len(kids) == 2
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
        assert not any(_alive(k) for k in kids)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_preexec_really_ignores_sigint(tmp_path):
    """The condition above is real: the child starts with SIGINT ignored, whatever pytest itself inherited."""
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"], preexec_fn=_ignore_sigint)
    try:
        assert wait_for(lambda: _sig_ignored(p.pid, signal.SIGINT), timeout=10)
    finally:
        p.kill()
        p.wait()


def test_router_drains_with_a_bound_and_second_signal_exits(tmp_path):
    eng = engine(tmp_path, "e0", "--time-scale", "1")
    with running(eng):
        r = router(tmp_path, eng.url, "--drain-timeout", "600")
        with running(r):
            body = json.dumps({"prompt": "x", "max_tokens": 8000, "ignore_eos": True, "stream": True}).encode()
            req = urllib.request.Request(r.url + "/v1/completions", data=body,
                                         headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=30) as resp:
                assert resp.readline().startswith(b"data: {")
                r.popen.send_signal(signal.SIGTERM)
                assert wait_for(lambda: "draining in-flight requests for up to 600 s" in r.output())
                assert r.popen.poll() is None  # still draining the open stream
                r.popen.send_signal(signal.SIGTERM)
                assert r.popen.wait(timeout=30) == 1
            assert "second signal: exiting now" in r.output()


def test_stale_stack_log_dirs_of_killed_ups_are_swept(tmp_path):
    import os

    from llmd_kserve.stack.local import sweep_stale_log_dirs

    dead = tmp_path / "llmd-stack-999999999-abc"  # no such pid (above pid_max)
    live = tmp_path / f"llmd-stack-{os.getppid()}-def"
    other = tmp_path / "llmd-stack-xyz"
    for d in (dead, live, other):
        d.mkdir()
        (d / "router.log").write_text("x")
    assert sweep_stale_log_dirs(tmp_path) == [dead]
    assert not dead.exists() and live.exists() and other.exists()
