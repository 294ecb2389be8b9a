"""The local stack behind `llmd-kserve up`: simulated engines, the router and Prometheus as supervised processes.

Public API::

    StackConfig(engines=2, prefill=0, decode=0, config="default", vllm_urls=(), host="127.0.0.1", port=0,
                time_scale=1.0, prometheus=None, engine_args=(), router_args=(), startup_timeout=60.0, seed=0)
        ``port=0`` picks a free router port; ``prometheus=None`` runs it when the binary is on PATH.
    LocalStack(settings=None, **fields)     context manager; fields override ``settings`` (``config="round-robin"``)
        ``start()`` / ``stop()`` / ``restart_router(config)``
        .router_url, .engine_urls (router endpoint specs with ``#role=…&kv=…``), .engine_base_urls,
        .prometheus_url (None without Prometheus), .pids, .log_dir, .describe() -> rich Table
    prometheus_available() -> bool
    run_up(**cli kwargs) -> int             what the CLI calls: start, print URLs, wait for Ctrl-C / SIGTERM

Every child runs in its own process group (``start_new_session``) and, started from the main thread, dies with
its parent (``PR_SET_PDEATHSIG``); ``stop()`` (also called at exit) sends SIGTERM to each group, then SIGKILL after
a grace period, so no process outlives the stack.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import IO, Any

from rich.table import Table

from llmd_kserve.errors import ConfigError, LlmdError

log = logging.getLogger(__name__)


def prometheus_available() -> bool:
    return shutil.which("prometheus") is not None


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True, slots=True)
class StackConfig:
    """What to start; ``prefill``/``decode`` > 0 replaces ``engines`` with P/D pools."""

    engines: int = 2
    prefill: int = 0
    decode: int = 0
    config: str = "default"
    vllm_urls: tuple[str, ...] = ()
    host: str = "127.0.0.1"
    port: int = 0
    time_scale: float = 1.0
    prometheus: bool | None = None
    engine_args: tuple[str, ...] = ()
    router_args: tuple[str, ...] = ()
    startup_timeout: float = 60.0
    seed: int = 0
    log_dir: str | None = None

    def roles(self) -> list[str]:
        if self.vllm_urls:
            return []
        if self.prefill or self.decode:
            if not (self.prefill and self.decode):
                raise ConfigError("--prefill and --decode must both be > 0", "prefill")
            return ["prefill"] * self.prefill + ["decode"] * self.decode
        if self.engines < 1:
            raise ConfigError("need at least one engine", "engines")
        return ["both"] * self.engines


@dataclass(slots=True)
class _Proc:
    name: str
    popen: subprocess.Popen
    log: IO[bytes]
    url: str = ""
    health: str = "/health"


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _check_port_free(host: str, port: int) -> None:
    """Fail before anything starts when the router's port is taken (a health probe would reach the other server)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}", "port") from exc


class LocalStack:
    """Engines + router (+ Prometheus) on this machine; use as ``with LocalStack(engines=2) as stack: ...``."""

    def __init__(self, settings: StackConfig | None = None, /, **overrides: Any) -> None:
        known = {f.name for f in fields(StackConfig)}
        bad = set(overrides) - known
        if bad:
            raise TypeError(f"unknown stack option(s): {sorted(bad)}")
        for key in ("vllm_urls", "engine_args", "router_args"):
            if key in overrides:
                overrides[key] = tuple(overrides[key] or ())
        self.settings = replace(settings or StackConfig(), **overrides)
        self.router_url, self.engine_urls, self.prometheus_url, self.log_dir = "", [], None, None
        self._procs, self._router, self._tmp = [], None, None

    # --- lifecycle ------------------------------------------------------------------------------------------------
    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def engine_base_urls(self) -> list[str]:
        return [u.split("#")[0] for u in self.engine_urls]

    @property
    def pids(self) -> list[int]:
        return [p.popen.pid for p in self._procs]

    def start(self) -> LocalStack:
        cfg = self.settings
        roles = cfg.roles()
        if cfg.prometheus and not prometheus_available():
            raise LlmdError("prometheus is not installed (Debian package 'prometheus'); use --no-prometheus")
        self._tmp = tempfile.TemporaryDirectory(prefix="llmd-stack-")
        self.log_dir = Path(cfg.log_dir) if cfg.log_dir else Path(self._tmp.name)
        try:
            self.log_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create log directory: {exc.strerror or exc}", str(self.log_dir)) from exc
        if cfg.port:
            _check_port_free(cfg.host, cfg.port)
        atexit.register(self.stop)
        try:
            self._start_engines(roles)
            # P/D pools under the default config get the P/D scheduler config
            self._start_router("pd-predicted-ttft" if cfg.prefill and cfg.config == "default" else cfg.config)
            if cfg.prometheus or (cfg.prometheus is None and prometheus_available()):
                self._start_prometheus()
            self._wait_healthy(self._procs)
        except BaseException:
            self.stop()
            raise
        return self

    def _spawn(self, name: str, argv: Sequence[str], url: str, health: str = "/health") -> _Proc:
        assert self.log_dir is not None
        logf = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - closed in stop()
        main_thread = threading.current_thread() is threading.main_thread()
        popen = subprocess.Popen(list(argv), stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 start_new_session=True, preexec_fn=_die_with_parent if main_thread else None)
        proc = _Proc(name, popen, logf, url, health)
        self._procs.append(proc)
        log.info("started %s pid=%d %s", name, popen.pid, url)
        return proc

    def _cli(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "llmd_kserve.cli", *args]

    def _start_engines(self, roles: Sequence[str]) -> None:
        cfg = self.settings
        if cfg.vllm_urls:
            self.engine_urls = list(cfg.vllm_urls)
            return
        for i, role in enumerate(roles):
            port, kv_port = free_port(cfg.host), free_port(cfg.host)
            url = f"http://{cfg.host}:{port}"
            kv = f"tcp://{cfg.host}:{kv_port}"
            argv = self._cli("engine", "--host", cfg.host, "--port", str(port), "--kv-events-endpoint", kv,
                             "--role", role, "--time-scale", str(cfg.time_scale), "--seed", str(cfg.seed + i),
                             *cfg.engine_args)
            self._spawn(f"engine-{i}-{role}", argv, url)
            frag = f"role={role}&kv={kv}" if role != "both" else f"kv={kv}"
            self.engine_urls.append(f"{url}#{frag}")

    def _start_router(self, config: str) -> None:
        cfg = self.settings
        port = cfg.port or free_port(cfg.host)
        self.router_url = f"http://{cfg.host}:{port}"
        argv = self._cli("router", "--host", cfg.host, "--port", str(port), "--config", config,
                         "--endpoints", ",".join(self.engine_urls), "--seed", str(cfg.seed), *cfg.router_args)
        self._router = self._spawn("router", argv, self.router_url)

    def restart_router(self, config: str) -> None:
        """Replace the router process with one running another scheduler config (engines keep running)."""
        if self._router is not None:
            self._terminate([self._router])
            self._procs.remove(self._router)
        port = int(self.router_url.rsplit(":", 1)[1]) if self.router_url else 0
        self.settings = replace(self.settings, config=config, port=port)
        self._start_router(config)
        assert self._router is not None
        self._wait_healthy([self._router])

    def _start_prometheus(self) -> None:
        assert self.log_dir is not None
        cfg = self.settings
        port = free_port(cfg.host)
        targets = [u.split("#")[0].split("://", 1)[1].rstrip("/") for u in self.engine_urls]
        scrape = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [
                {"job_name": "llmd-router", "static_configs": [{"targets": [self.router_url.split("://", 1)[1]]}]},
                {"job_name": "vllm", "static_configs": [{"targets": targets}]},
            ],
        }
        import yaml

        conf = self.log_dir / "prometheus.yml"
        conf.write_text(yaml.safe_dump(scrape, sort_keys=False))
        self.prometheus_url = f"http://{cfg.host}:{port}"
        argv = ["prometheus", f"--config.file={conf}", f"--storage.tsdb.path={self.log_dir / 'tsdb'}",
                f"--web.listen-address={cfg.host}:{port}", "--storage.tsdb.retention.time=1d"]
        self._spawn("prometheus", argv, self.prometheus_url, "/-/ready")

    def _wait_healthy(self, procs: Sequence[_Proc]) -> None:
        deadline = time.monotonic() + self.settings.startup_timeout
        pending = [p for p in procs if p.url]
        while pending:
            for p in list(pending):
                if p.popen.poll() is not None:
                    raise LlmdError(f"{p.name} exited with code {p.popen.returncode} during startup: "
                                    f"{self._reason(self._tail(p))}")
                try:
                    with urllib.request.urlopen(p.url + p.health, timeout=2) as resp:
                        if resp.status == 200:
                            pending.remove(p)
                except OSError:
                    pass
            if pending and time.monotonic() > deadline:
                raise LlmdError(f"not healthy after {self.settings.startup_timeout:g}s: {[p.name for p in pending]}")
            if pending:
                time.sleep(0.1)

    def _tail(self, p: _Proc, n: int = 20) -> str:
        assert self.log_dir is not None
        with contextlib.suppress(OSError):
            return "\n".join((self.log_dir / f"{p.name}.log").read_text(errors="replace").splitlines()[-n:])
        return ""

    @staticmethod
    def _reason(tail: str) -> str:
        """The child's own error line (``llmd-kserve x: error: …``, or a traceback's last line), for one-line errors."""
        lines = [ln.strip() for ln in tail.splitlines() if ln.strip()]
        errors = [ln for ln in lines if ": error: " in ln]
        return (errors or lines or ["(no output)"])[-1]

    def check(self) -> list[str]:
        """Names of processes that have exited."""
        return [p.name for p in self._procs if p.popen.poll() is not None]

    @staticmethod
    def _terminate(procs: Sequence[_Proc], grace: float = 5.0) -> None:
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
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.popen.wait(timeout=grace)
            p.log.close()

    def stop(self) -> None:
        """Stop everything (idempotent): SIGTERM each process group, SIGKILL after a grace period."""
        procs, self._procs, self._router = list(self._procs), [], None
        if procs:
            self._terminate(list(reversed(procs)))
            log.info("stopped %d processes", len(procs))
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)
        if self._tmp is not None and not self.settings.log_dir:
            self._tmp.cleanup()
            self._tmp = None

    def describe(self) -> Table:
        table = Table(title="llmd-kserve local stack")
        for col in ("component", "url", "pid"):
            table.add_column(col)
        for p in self._procs:
            table.add_row(p.name, p.url, str(p.popen.pid))
        for u in self.settings.vllm_urls:
            table.add_row("vllm", u, "-")
        return table


def run_up(*, engines: int = 2, prefill: int = 0, decode: int = 0, config: str = "default",
           vllm: Sequence[str] | None = None, host: str = "127.0.0.1", port: int = 8080, time_scale: float = 1.0,
           prometheus: bool | None = None, engine_args: Sequence[str] | None = None, seed: int = 0,
           log_dir: str | None = None, **_: Any) -> int:
    """Start the stack, print its URLs and wait until Ctrl-C or SIGTERM; exit 1 if a component dies."""
    from rich.console import Console

    console = Console()
    cfg = StackConfig(engines=engines, prefill=prefill, decode=decode, config=config, vllm_urls=tuple(vllm or ()),
                      host=host, port=port, time_scale=time_scale, prometheus=prometheus,
                      engine_args=tuple(engine_args or ()), seed=seed, log_dir=log_dir)

    def _sigterm(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, _sigterm)
    stack = LocalStack(cfg)
    try:
        with console.status("starting engines, router and Prometheus…"):
            stack.start()
        console.print(stack.describe())
        console.print(f"OpenAI endpoint: [bold]{stack.router_url}/v1[/bold]   logs: {stack.log_dir}")
        if stack.prometheus_url:
            console.print(f"Prometheus: [bold]{stack.prometheus_url}[/bold]")
        console.print(f"try: llmd-kserve bench --target {stack.router_url} --rate 5 --num-requests 100")
        console.print("Ctrl-C stops everything.")
        while not (dead := stack.check()):
            time.sleep(0.5)
        console.print(f"[red]exited unexpectedly: {', '.join(dead)}; stopping[/red]")
        return 1
    except KeyboardInterrupt:
        console.print("stopping…")
        return 0
    finally:
        stack.stop()
        signal.signal(signal.SIGTERM, old)
