"""M3: the router raises its soft fd limit to the hard one and warns when it stays low. M4: half-sent requests
(headers or body) are timed out, so a slowloris client cannot hold the router's file descriptors."""

from __future__ import annotations

import socket
import sys
import time

import pytest

from tests.faults.procs import engine, request, router, running, wait_for

pytestmark = pytest.mark.slow  # real processes and sockets: the full suite runs them, the fast loop does not


def _limits(soft: int, hard: int) -> list[str]:
    """A launcher that sets the open-file limit, then execs the command (same pid). Not ``preexec_fn``: Python code
    between fork and exec can abort in a child forked from a test process with gRPC's threads running."""
    code = ("import os, resource, sys; resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[1]), int(sys.argv[2])));"
            " os.execv(sys.argv[3], sys.argv[3:])")
    return [sys.executable, "-c", code, str(soft), str(hard)]


def _soft_nofile(pid: int) -> int:
    with open(f"/proc/{pid}/limits") as f:
        for line in f:
            if line.startswith("Max open files"):
                return int(line.split()[3])
    raise AssertionError("no limit line")


def test_soft_fd_limit_is_raised_to_hard(tmp_path):
    eng = engine(tmp_path, "e0")
    with running(eng):
        r = router(tmp_path, eng.url, launcher=_limits(256, 8192))
        with running(r):
            assert _soft_nofile(r.pid) == 8192
            assert "open-file limit" not in r.output()
        low = router(tmp_path, eng.url, name="low", launcher=_limits(256, 512))
        with running(low):
            assert _soft_nofile(low.pid) == 512
            assert "open-file limit is 512" in low.output()


def _half_sent(port: int, n: int) -> list[socket.socket]:
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # never finished
        socks.append(s)
    return socks


def test_slowloris_cannot_exhaust_the_router(tmp_path):
    eng = engine(tmp_path, "e0")
    with running(eng):
        # the router may open 128 files; the attacker holds 150 half-sent requests and never closes them
        r = router(tmp_path, eng.url, "--header-timeout", "1", launcher=_limits(128, 128))
        port = int(r.url.rsplit(":", 1)[1])
        socks: list[socket.socket] = []
        with running(r):
            try:
                socks = _half_sent(port, 150)
                time.sleep(0.5)
                # a real client gets through while the attacker still holds every socket it opened
                assert wait_for(lambda: _health(r.url), timeout=30)
                closed = 0
                for s in socks:
                    s.settimeout(10)
                    try:
                        closed += s.recv(1) == b""
                    except OSError:
                        closed += 1
                assert closed == len(socks)
            finally:
                for s in socks:
                    s.close()


def _health(url: str) -> bool:
    try:
        return request(url + "/health", timeout=3)[0] == 200
    except OSError:
        return False


def test_half_sent_body_gets_408(tmp_path):
    eng = engine(tmp_path, "e0")
    with running(eng):
        r = router(tmp_path, eng.url, "--body-timeout", "1")
        with running(r):
            port = int(r.url.rsplit(":", 1)[1])
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                          b"Content-Length: 100\r\n\r\n{\"prompt\":")
                data = b""
                while b"}}" not in data and (chunk := s.recv(4096)):  # the answer, before the connection closes
                    data += chunk
            assert data.startswith(b"HTTP/1.1 408")
            assert b'"type":"RequestTimeoutError"' in data
