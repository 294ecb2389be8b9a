"""Supervised child processes: each in its own process group, dying with its parent, health-checked, stopped whole."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import random
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from llmd_kserve.errors import ConfigError, LlmdError

log = logging.getLogger(__name__)


_LOWEST_PORT = 20000
_handed_out: set[int] = set()  # ports this process gave out: a child may not have bound one yet


def _ephemeral_range() -> tuple[int, int]:
    """The kernel's range for outgoing connections' source ports (Linux; elsewhere IANA's 49152-65535)."""
    try:
        lo, hi = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(lo), int(hi)
    except (OSError, ValueError):
        return 49152, 65535


def _socket(host: str) -> socket.socket:
    """A TCP socket of ``host``'s address family (IPv6 when it has a colon)."""
    return socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)


def _bindable(host: str, port: int) -> bool:
    with _socket(host) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing is bound to, for a child process to listen on. Taken below the kernel's ephemeral range
    when there is room: a port from that range (what binding port 0 gives) can become the source port of any
    outgoing connection between this check and the child's bind ("Address already in use" at its start-up), one
    below it only by another explicit bind. Never the same port twice in one process."""
    lo, _ = _ephemeral_range()
    if lo - _LOWEST_PORT >= 1000:
        rng = random.SystemRandom()
        for _ in range(200):
            port = rng.randrange(_LOWEST_PORT, lo)
            if port not in _handed_out and _bindable(host, port):
                _handed_out.add(port)
                return port
    with _socket(host) as s:
        s.bind((host, 0))
        port = int(s.getsockname()[1])
    _handed_out.add(port)
    return port


def check_port_free(host: str, port: int) -> None:
    """Fail before anything starts when a port is taken (a health probe would reach the other server)."""
    with _socket(host) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}", "port") from exc


@dataclass(slots=True)
class Proc:
    """One child: its process, its log file (``<log_dir>/<name>.log``) and where it answers health checks."""

    name: str
    popen: subprocess.Popen[bytes]
    log: IO[bytes]
    url: str = ""
    health: str = "/health"
    diagnose: Callable[[str], str] | None = None
    """The cause of a failed start, in one line, from its whole log (default: the last error line)."""
    probe: Callable[[], bool] | None = None
    """Whether it answers, for a server that is not HTTP (default: ``GET url + health`` answers 200)."""

    def tail(self, n: int = 20) -> str:
        """The last ``n`` lines of its log."""
        with contextlib.suppress(OSError):
            return "\n".join(Path(self.log.name).read_text(errors="replace").splitlines()[-n:])
        return ""


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
KILL_WAIT_S = 30.0
"""After SIGKILL, how long :func:`terminate` waits for a process group to be gone (only the kernel can delay it)."""


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Hold SIGINT and SIGTERM until the block ends, then deliver them to the handlers they had (main thread only:
    elsewhere a no-op). A Ctrl-C that comes while a child starts is raised once the child is on the list that stops
    it; one that comes while the stack stops, once it has stopped."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []

    def hold(signum: int, frame: object) -> None:
        pending.append(signum)

    saved = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    held = [sig for sig, handler in saved.items() if handler not in (signal.SIG_IGN, None)]
    for sig in held:
        signal.signal(sig, hold)
    try:
        yield
    finally:
        for sig in held:
            signal.signal(sig, saved[sig])
        for signum in dict.fromkeys(pending):
            signal.raise_signal(signum)


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def spawn(name: str, argv: Sequence[str], log_dir: Path, url: str = "", health: str = "/health",
          env: Mapping[str, str] | None = None, diagnose: Callable[[str], str] | None = None,
          probe: Callable[[], bool] | None = None) -> Proc:
    """Start ``argv`` in a new session, output to ``<log_dir>/<name>.log``; it dies with us (from the main thread).
    ``env``: its whole environment (default: ours). Call it inside :func:`signals_held` with whatever records the
    child, so that a Ctrl-C cannot come between its start and its record."""
    logf = open(log_dir / f"{name}.log", "ab")  # noqa: SIM115 - closed in terminate()
    main_thread = threading.current_thread() is threading.main_thread()
    popen = subprocess.Popen(list(argv), stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             start_new_session=True, preexec_fn=_die_with_parent if main_thread else None,
                             env=dict(env) if env is not None else None)
    log.info("started %s pid=%d %s", name, popen.pid, url)
    return Proc(name, popen, logf, url, health, diagnose, probe)


def _reason(tail: str) -> str:
    """The child's own error line (``llmd-kserve x: error: …``, or a traceback's last line), for one-line errors."""
    lines = [ln.strip() for ln in tail.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ": error: " in ln]
    return (errors or lines or ["(no output)"])[-1]


def _how_it_ended(code: int) -> str:
    if code >= 0:
        return f"exited with code {code}"
    try:
        return f"was killed by {signal.Signals(-code).name}"
    except ValueError:
        return f"was killed by signal {-code}"


def wait_healthy(procs: Sequence[Proc], timeout: float) -> None:
    """Poll each process's health URL until it answers 200; LlmdError if one exits or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    pending = [p for p in procs if p.url]
    while pending:
        for p in list(pending):
            if p.popen.poll() is not None:
                how = _how_it_ended(p.popen.returncode)
                cause = p.diagnose(p.tail(2000)) if p.diagnose else _reason(p.tail())
                raise LlmdError(f"{p.name} {how} during startup: {cause}")
            if p.probe is not None:
                if p.probe():
                    pending.remove(p)
                continue
            try:
                with urllib.request.urlopen(p.url + p.health, timeout=2) as resp:
                    if resp.status == 200:
                        pending.remove(p)
            except OSError:
                pass
        if pending and time.monotonic() > deadline:
            hints = [f"; {p.name}: {p.diagnose(p.tail(2000))}" for p in pending if p.diagnose]
            raise LlmdError(f"not healthy after {timeout:g}s: {[p.name for p in pending]}{''.join(hints[:1])}")
        if pending:
            time.sleep(0.1)


def terminate(procs: Sequence[Proc], grace: float = 5.0) -> None:
    """SIGTERM each process group, wait up to ``grace``, then SIGKILL the groups and return once each is gone (its
    leader reaped, no member left), or after :data:`KILL_WAIT_S` with a warning; closes the logs."""
    for p in procs:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(p.popen.pid, signal.SIGTERM)  # the whole group: the child and anything it spawned
    deadline = time.monotonic() + grace
    for p in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.popen.wait(timeout=max(0.0, deadline - time.monotonic()))
    for p in procs:  # stragglers: leaders that ignored SIGTERM, group members that outlived their leader
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(p.popen.pid, signal.SIGKILL)
    deadline = time.monotonic() + KILL_WAIT_S
    for p in procs:
        if not _wait_gone(p, deadline):
            log.warning("%s (process group %d) still there %gs after SIGKILL", p.name, p.popen.pid, KILL_WAIT_S)
        p.log.close()


def _wait_gone(p: Proc, deadline: float) -> bool:
    """Wait until ``p``'s process group is empty: its leader reaped, and its other members (reparented on the
    leader's death, so reaped by init, or by us where we are init or a subreaper) exited and reaped."""
    with contextlib.suppress(subprocess.TimeoutExpired):
        p.popen.wait(timeout=max(0.0, deadline - time.monotonic()))
    pgid = p.popen.pid
    while True:
        with contextlib.suppress(ChildProcessError):
            while os.waitpid(-pgid, os.WNOHANG)[0]:
                pass
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
