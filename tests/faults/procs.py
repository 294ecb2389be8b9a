"""Real processes for the fault-report regression tests: engines, routers, the FAKE engine, an SSRF listener."""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[2]
FAKE = Path(__file__).with_name("fake_engine.py")
_URL = re.compile(r"(http://127\.0\.0\.1:\d+)")


class Proc:
    """A child process whose output goes to a file; ``url`` is the first URL it printed."""

    def __init__(self, argv: Sequence[str], log: Path, preexec_fn: Callable[[], None] | None = None,
                 ready: str = "http://", timeout: float = 60.0) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.log = log
        self._f = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(list(argv), stdout=self._f, stderr=subprocess.STDOUT, env=env,
                                      stdin=subprocess.DEVNULL, preexec_fn=preexec_fn)
        self.url = ""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.output()
            line = next((ln for ln in text.splitlines() if ready in ln), "")
            m = _URL.search(line)
            if m:
                self.url = m.group(1)
                return
            if self.popen.poll() is not None:
                raise RuntimeError(f"{argv} exited {self.popen.returncode}:\n{text}")
            time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"{argv} did not start:\n{self.output()}")

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.popen.pid, signal.SIGCONT)
            self.popen.terminate()
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        self._f.close()


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "llmd_kserve.cli", *args]


def engine(tmp: Path, name: str, *args: str, kv: bool = False) -> Proc:
    extra = ["--kv-events-endpoint", "tcp://127.0.0.1:0"] if kv else []
    return Proc(cli("engine", "--host", "127.0.0.1", "--port", "0", "--time-scale", "0.05", *extra, *args), tmp / f"{name}.log",
                ready="engine ready")


def router(tmp: Path, endpoints: str, *args: str, name: str = "router", launcher: Sequence[str] = ()) -> Proc:
    """A router process; ``launcher``: argv that runs before it and execs it (e.g. to set resource limits)."""
    flag = ["--endpoints", endpoints] if endpoints else []
    argv = cli("router", "--host", "127.0.0.1", "--port", "0", "--scrape-interval", "0.05", *flag, *args)
    return Proc([*launcher, *argv], tmp / f"{name}.log", ready="listening on")


def fake(tmp: Path, mode: str) -> Proc:
    return Proc([sys.executable, str(FAKE), "0", mode], tmp / f"fake-{mode}.log", ready="listening on")


@contextlib.contextmanager
def running(*procs: Proc) -> Iterator[None]:
    try:
        yield
    finally:
        for p in procs:
            p.stop()


def request(url: str, body: dict | bytes | None = None, headers: dict | None = None,
            timeout: float = 30.0) -> tuple[int, bytes, dict]:
    """(status, body, headers); HTTP errors are answers too."""
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read(), dict(e.headers)


def metric(text: str, name: str, **labels: str) -> float:
    return sum(s.value for fam in text_string_to_metric_families(text) for s in fam.samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def wait_for(check: Callable[[], bool], timeout: float = 20.0, every: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(every)
    return False


class Listener:
    """An HTTP server on 127.0.0.1 recording every request it gets (the SSRF target)."""

    def __init__(self) -> None:
        hits = self.hits = []

        class H(http.server.BaseHTTPRequestHandler):
            def do_POST(s) -> None:  # noqa: N802, N805
                hits.append((s.path, s.rfile.read(int(s.headers.get("Content-Length") or 0))))
                s.send_response(200)
                s.end_headers()

            def log_message(s, *a) -> None:  # noqa: N805
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
