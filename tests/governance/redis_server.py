"""A real ``redis-server`` (Debian's package) on a free port in a temp dir, with an append-only file so a restart
keeps the data; the tests that use it skip with the reason when the binary is not installed."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest

from llmd_kserve.stack.procs import free_port
from llmd_kserve.stack.redis import redis_answers, redis_argv


class RedisServer:
    def __init__(self, workdir: Path) -> None:
        self.dir, self.port = workdir, free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(redis_argv(self.dir, self.port, appendfsync="always"),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(500):
            if redis_answers(self.url, 0.1):
                return
            time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


def redis_server_binary() -> str:
    path = shutil.which("redis-server")
    if path is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server; tests/run.sh installs it)")
    return path


@pytest.fixture
def redis_server(tmp_path):
    redis_server_binary()
    pytest.importorskip("redis", reason="the redis package is not installed (pip install 'llmd-kserve[redis]')")
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()
