"""The local stack's assembly: simulated or real vLLM engines (or vLLM URLs), the router and Prometheus, started
and stopped."""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from rich.table import Table

from llmd_kserve.defaults import DEFAULT_PROFILE
from llmd_kserve.errors import ConfigError, LlmdError
from llmd_kserve.latency import load_profile
from llmd_kserve.stack.procs import Proc, check_port_free, free_port, signals_held, spawn, terminate, wait_healthy
from llmd_kserve.stack.prometheus import prometheus_argv, prometheus_available
from llmd_kserve.stack.replicas import ReplicaMixin, check_replicas, per_replica
from llmd_kserve.stack.vllm import DEFAULT_KV_CACHE_TOKENS

log = logging.getLogger(__name__)
EPP_RESTARTS = 5
"""``up --gateway envoy`` restarts an EPP that exits; it gives up after this many exits in a row, each within
:data:`EPP_STABLE_S` of its start."""
EPP_STABLE_S = 60.0


@dataclass(frozen=True, slots=True)
class StackConfig:
    """What to start; ``prefill``/``decode`` > 0 replaces ``engines`` with P/D pools."""

    engines: int = 2
    engine: str = "sim"
    """``sim``: simulated engines; ``vllm``: real vLLM servers from the vLLM environment (``llmd-kserve vllm install``)."""
    model: str | None = None
    """With ``engine="vllm"``: a Hugging Face model directory (default: the tiny random-weights Llama, built once)."""
    kv_cache_tokens: int = DEFAULT_KV_CACHE_TOKENS
    """With ``engine="vllm"``: KV cache per replica, in tokens (its bytes computed from the model's config)."""
    vllm_python: str | None = None
    """With ``engine="vllm"``: the interpreter to run vLLM with (default: the nearest ``.venv-vllm``'s)."""
    vllm_startup_timeout: float = 600.0
    profile: str = DEFAULT_PROFILE
    """The simulated engines' latency profile and the router's latency model (a built-in name or a file)."""
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
    gateway: str = "none"
    """``envoy``: a real Envoy in front and the scheduler as its Endpoint Picker (``llmd_kserve.epp``)."""
    response_mode: str = "full"
    fail_open: bool = False
    routers: int = 1
    """Router replicas; more than one: each its own process (own KV index and scrapes of the same engines), a
    local Envoy in front as the balancer (``stack.balancer``), ``router_url`` is Envoy's."""
    balancer: str = "round-robin"
    """With ``routers`` > 1: ``round-robin`` or ``least-request`` over the replicas."""
    redis: bool = False
    """Start a local ``redis-server`` (``stack.redis``) and give every router ``--state-url`` to it."""
    state_url: str | None = None
    """``redis://…`` every router keeps its rate limits, budgets and spend in (shared by the replicas)."""

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


def sweep_stale_log_dirs(root: str | Path | None = None) -> list[Path]:
    """Remove ``llmd-stack-<pid>-*`` temp dirs whose ``up`` is gone (it was SIGKILLed and could not clean up)."""
    removed = []
    for d in Path(root or tempfile.gettempdir()).glob("llmd-stack-*-*"):
        pid = d.name.split("-")[2]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d)
        except OSError:  # alive, another user's
            continue
    return removed


class LocalStack(ReplicaMixin):
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
        self.router_url = ""
        self.engine_urls: list[str] = []
        self.prometheus_url: str | None = None
        self.log_dir: Path | None = None
        self._procs: list[Proc] = []
        self._router: Proc | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.epp_restarts = 0
        """Times the EPP was restarted after it exited (``--gateway envoy``)."""
        self._epp_argv: list[str] = []
        self._epp_started = 0.0
        self._epp_failures = 0
        self._model_dir: Path | None = None
        """The vLLM replicas' model directory: the router tokenizes with its tokenizer (the engines' own ids)."""
        self.replicas: list[Proc] = []
        """With ``routers`` > 1: the router replicas, in order (``router_urls``); ``balancer``: Envoy in front."""
        self.balancer: Proc | None = None
        self.redis: Proc | None = None
        self.state_url: str | None = None
        self.replica_restarts = 0
        self.redis_restarts = 0
        self._replica_argv: list[list[str]] = []
        self._replica_started: list[float] = []
        self._replica_failures: list[int] = []

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

    @property
    def router_urls(self) -> list[str]:
        """Each router replica's own URL (one router: ``[router_url]``)."""
        return [p.url for p in self.replicas] if self.replicas else [self.router_url]

    def start(self) -> LocalStack:
        cfg = self.settings
        roles = cfg.roles()
        if cfg.engine not in ("sim", "vllm"):
            raise ConfigError(f"must be sim or vllm, got {cfg.engine!r}", "engine")
        if cfg.gateway not in ("none", "envoy"):
            raise ConfigError(f"must be none or envoy, got {cfg.gateway!r}", "gateway")
        check_replicas(cfg)
        load_profile(cfg.profile)  # a bad name fails here, in one line, before anything starts
        if cfg.prometheus and not prometheus_available():
            raise LlmdError("prometheus is not installed (Debian package 'prometheus'); use --no-prometheus")
        if not cfg.log_dir:
            sweep_stale_log_dirs()
        self._tmp = None if cfg.log_dir else tempfile.TemporaryDirectory(prefix=f"llmd-stack-{os.getpid()}-")
        log_dir = self.log_dir = Path(cfg.log_dir or self._tmp.name)  # type: ignore[union-attr]
        try:
            log_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create log directory: {exc.strerror or exc}", str(log_dir)) from exc
        if cfg.port:
            check_port_free(cfg.host, cfg.port)
        atexit.register(self.stop)
        try:
            self.state_url = self._start_redis() if cfg.redis else cfg.state_url
            self._start_engines(roles)
            # P/D pools under the default config get the P/D scheduler config
            config = "pd-predicted-ttft" if cfg.prefill and cfg.config == "default" else cfg.config
            if cfg.gateway == "envoy":
                self._start_gateway(config)
            elif cfg.routers > 1:
                self._start_replicas(config)
            else:
                self._start_router(config)
            if cfg.prometheus or (cfg.prometheus is None and prometheus_available()):
                self._start_prometheus()
            wait_healthy(self._procs, cfg.startup_timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _spawn(self, name: str, argv: Sequence[str], url: str, health: str = "/health", **options: Any) -> Proc:
        assert self.log_dir is not None
        with signals_held():  # a Ctrl-C now is raised once the child is on the list stop() works through
            proc = spawn(name, argv, self.log_dir, url, health, **options)
            self._procs.append(proc)
        return proc

    def _start_engines(self, roles: Sequence[str]) -> None:
        cfg = self.settings
        if cfg.vllm_urls:
            self.engine_urls = list(cfg.vllm_urls)
            return
        if cfg.engine == "vllm":
            self._start_vllm_engines(roles)
            return
        for i, role in enumerate(roles):
            port, kv_port, replay_port = free_port(cfg.host), free_port(cfg.host), free_port(cfg.host)
            url = f"http://{cfg.host}:{port}"
            kv = f"tcp://{cfg.host}:{kv_port}"
            replay = f"tcp://{cfg.host}:{replay_port}"
            argv = _cli("engine", "--host", cfg.host, "--port", str(port), "--kv-events-endpoint", kv,
                        "--kv-events-replay-endpoint", replay,
                        "--role", role, "--time-scale", str(cfg.time_scale), "--seed", str(cfg.seed + i),
                        "--profile", cfg.profile, *cfg.engine_args)
            self._spawn(f"engine-{i}-{role}", argv, url)
            frag = (f"role={role}&" if role != "both" else "") + f"kv={kv}&replay={replay}"
            self.engine_urls.append(f"{url}#{frag}")

    def _start_vllm_engines(self, roles: Sequence[str]) -> None:
        """Real vLLM servers, one core each where cores allow; waits until all answer /health (they take a while,
        so the router starts on ready engines and a failure names its cause in one line)."""
        from llmd_kserve.stack.vllm import ModelInfo, VllmReplica, check_memory, replica_cores, startup_failure
        from llmd_kserve.tiny_model import ensure_tiny_model
        from llmd_kserve.vllm_env import find_vllm_env, gpu_present

        cfg = self.settings
        assert self.log_dir is not None
        env = find_vllm_env(python=cfg.vllm_python)
        model = ModelInfo.load(cfg.model or ensure_tiny_model())
        self._model_dir = model.path
        cpu = not gpu_present()
        cores = replica_cores(len(roles))
        replicas = [VllmReplica(model, free_port(cfg.host), free_port(cfg.host), free_port(cfg.host), host=cfg.host,
                                role=role, kv_cache_tokens=cfg.kv_cache_tokens, cpu=cpu, core=cores[i],
                                seed=cfg.seed + i, extra_args=cfg.engine_args,
                                side_channel_port=free_port(cfg.host) if role != "both" else None)
                    for i, role in enumerate(roles)]
        _ = replicas[0].max_model_len  # a too-small KV cache fails here, before anything starts
        if cpu:
            check_memory(len(replicas), replicas[0].kv_cache_bytes)
        started = []
        for i, r in enumerate(replicas):
            started.append(self._spawn(f"vllm-{i}-{r.role}", r.argv(env.python), r.url, env=r.env(os.environ),
                                       diagnose=startup_failure))
            self.engine_urls.append(r.endpoint_spec)
        wait_healthy(started, cfg.vllm_startup_timeout)

    def _tokenizer_args(self) -> tuple[str, ...]:
        """``--tokenizer MODEL_DIR`` in front of real vLLM replicas (unless the router args name one): prompts are
        keyed in the engines' own token ids, so prefix matches and predicted cached tokens are the engines'."""
        if self._model_dir is None or any(a.split("=", 1)[0] == "--tokenizer" for a in self.settings.router_args):
            return ()
        return ("--tokenizer", str(self._model_dir))

    def _router_argv(self, config: str, port: int, replica: int | None = None) -> list[str]:
        cfg = self.settings
        state = ("--state-url", self.state_url) if self.state_url else ()
        args = cfg.router_args if replica is None else per_replica(cfg.router_args, replica)
        return _cli("router", "--host", cfg.host, "--port", str(port), "--config", config,
                    "--endpoints", ",".join(self.engine_urls), "--seed", str(cfg.seed), "--admin",
                    "--profile", cfg.profile, *self._tokenizer_args(), *state, *args)

    def _start_router(self, config: str) -> None:
        cfg = self.settings
        port = cfg.port or free_port(cfg.host)
        self.router_url = f"http://{cfg.host}:{port}"
        self._router = self._spawn("router", self._router_argv(config, port), self.router_url)

    def _start_gateway(self, config: str) -> None:
        """The Gateway API path: the EPP process, then Envoy (ext_proc → EPP, ORIGINAL_DST on its pick)."""
        from llmd_kserve.epp.envoy import EnvoyConfig, envoy_argv
        from llmd_kserve.epp.protocol import host_port

        cfg = self.settings
        assert self.log_dir is not None
        pool = list(self.engine_urls)
        prefill = [u.split("#")[0] for u in pool if "role=prefill" in u]
        for i, url in enumerate(pool):  # P/D: each decode engine is reached through its pd-sidecar
            base, _, frag = url.partition("#")
            if "role=decode" in frag:
                port = free_port(cfg.host)
                self._spawn(f"pd-sidecar-{i}", _cli("pd-sidecar", "--host", cfg.host, "--port", str(port), "--decode",
                                                    base, "--prefill-endpoints", ",".join(prefill)),
                            f"http://{cfg.host}:{port}")
                pool[i] = f"http://{cfg.host}:{port}#{frag}"
        grpc_port, metrics_port, admin_port = free_port(cfg.host), free_port(cfg.host), free_port("127.0.0.1")
        argv = _cli("epp", "--host", cfg.host, "--grpc-port", str(grpc_port), "--metrics-port", str(metrics_port),
                    "--config", config, "--endpoints", ",".join(pool), "--seed", str(cfg.seed),
                    "--response-mode", cfg.response_mode, "--profile", cfg.profile, *self._tokenizer_args(),
                    *cfg.router_args)
        self._router = self._spawn("epp", argv, f"http://{cfg.host}:{metrics_port}")
        self._epp_argv, self._epp_started = argv, time.monotonic()
        # Envoy health-checks the EPP from its start: bring the EPP (and the sidecars) up first
        wait_healthy(self._procs, cfg.startup_timeout)
        port = cfg.port or free_port(cfg.host)
        fallback = tuple(host_port(u) for u in self.engine_base_urls) if cfg.fail_open else ()
        # P/D: response headers reach the EPP in either mode (the prefill endpoint's load is released at decode start)
        envoy_cfg = EnvoyConfig(epp=f"{cfg.host}:{grpc_port}", host=cfg.host, port=port, admin_port=admin_port,
                                response_mode=cfg.response_mode, failure_mode_allow=cfg.fail_open,  # type: ignore[arg-type]
                                fallback=fallback, response_headers=True if prefill else None)
        path = self.log_dir / "envoy.json"
        path.write_text(json.dumps(envoy_cfg.bootstrap(), indent=1))
        self._spawn("envoy", envoy_argv(path), f"http://127.0.0.1:{admin_port}", "/ready")
        self.router_url = f"http://{cfg.host}:{port}"

    def restart_router(self, config: str) -> None:
        """Replace the router process with one running another scheduler config (engines keep running)."""
        if self._router is not None:
            with signals_held():
                terminate([self._router])
                self._procs.remove(self._router)
        port = int(self.router_url.rsplit(":", 1)[1]) if self.router_url else 0
        self.settings = replace(self.settings, config=config, port=port)
        self._start_router(config)
        assert self._router is not None
        wait_healthy([self._router], self.settings.startup_timeout)

    def _start_prometheus(self) -> None:
        assert self.log_dir is not None
        cfg = self.settings
        port = free_port(cfg.host)
        self.prometheus_url = f"http://{cfg.host}:{port}"
        scrape: str | list[str] = (self._router.url if self._router is not None and cfg.gateway == "envoy"
                                   else self.router_urls)
        argv = prometheus_argv(self.log_dir, cfg.host, port, scrape, self.engine_base_urls)
        self._spawn("prometheus", argv, self.prometheus_url, "/-/ready")

    def check(self) -> list[str]:
        """Names of processes that have exited."""
        return [p.name for p in self._procs if p.popen.poll() is not None]

    def supervise(self) -> list[str]:
        """Restart the EPP if it exited (same ports and flags, so Envoy finds it again; with ``fail_open`` Envoy
        serves from the fallback meanwhile); names of the other processes that exited, and of an EPP that keeps
        exiting (:data:`EPP_RESTARTS` times in a row, each within :data:`EPP_STABLE_S` of its start)."""
        dead = self.check()
        if "epp" in dead and self._restart_epp():
            dead.remove("epp")
        self._restart_dead_replicas(dead)
        return dead

    def _restart_epp(self) -> bool:
        old = self._router
        assert old is not None and self.log_dir is not None
        quick = time.monotonic() - self._epp_started < EPP_STABLE_S
        self._epp_failures = self._epp_failures + 1 if quick else 1
        if self._epp_failures > EPP_RESTARTS:
            log.error("epp exited %d times in a row; not restarting it", self._epp_failures)
            return False
        log.warning("epp exited with code %s; restarting it (log: %s)", old.popen.returncode, old.log.name)
        old.log.close()
        with signals_held():
            new = spawn("epp", self._epp_argv, self.log_dir, old.url, old.health)
            self._procs[self._procs.index(old)] = self._router = new
        self._epp_started = time.monotonic()
        self.epp_restarts += 1
        return True

    def stop(self) -> None:
        """Stop everything (idempotent): SIGTERM each process group, SIGKILL after a grace period; returns when every
        group is gone. A Ctrl-C meanwhile is raised after that, so it cannot leave a process behind."""
        with signals_held():
            procs, self._procs, self._router = list(self._procs), [], None
            self.replicas, self.balancer, self.redis = [], None, None
            if procs:
                terminate(list(reversed(procs)))
                log.info("stopped %d processes", len(procs))
            with contextlib.suppress(Exception):
                atexit.unregister(self.stop)
            if self._tmp is not None:
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
        if self.balancer is not None:
            table.add_row("balancer (listener)", self.router_url, str(self.balancer.popen.pid))
        return table


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "llmd_kserve.cli", *args]
