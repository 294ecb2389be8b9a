"""A local ``redis-server`` for the stack's shared governance state (``up --redis``): its command line and a ping.

Persistence: append-only file on (``--appendonly yes --appendfsync everysec``), RDB snapshots off. A write is in
the file (the kernel's page cache) before Redis replies to it, so a restarted or killed ``redis-server`` comes back
with every budget, spend and rate window; only a crash of the machine itself can lose up to the last second.
The server listens on 127.0.0.1 only, whatever the stack's host: only the local routers use it.
"""

from __future__ import annotations

import shutil
import socket
from pathlib import Path
from urllib.parse import urlsplit

from llmd_kserve.errors import LlmdError


def redis_available() -> bool:
    return shutil.which("redis-server") is not None


def redis_argv(data_dir: Path, port: int, appendfsync: str = "everysec") -> list[str]:
    """The command that runs ``redis-server`` on 127.0.0.1:``port`` with its append-only file in ``data_dir``
    (``appendfsync``: Redis's fsync policy for that file)."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise LlmdError("redis-server is not installed (Debian package 'redis-server'); or give --state-url")
    data_dir.mkdir(parents=True, exist_ok=True)
    return [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data_dir), "--save", "",
            "--appendonly", "yes", "--appendfsync", appendfsync, "--protected-mode", "yes"]


def redis_answers(url: str, timeout: float = 0.5) -> bool:
    """Whether the Redis at ``redis://host:port`` answers ``PING``."""
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379), timeout) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False
