"""Router replicas in the local stack (``up --routers N``): N router processes over the same engines, Envoy
balancing over them (``stack.balancer``), the stack's own ``redis-server`` (``stack.redis``) for the state they share,
and restarts of a replica or of Redis (what the fault runs do)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmd_kserve.errors import ConfigError
from llmd_kserve.stack.procs import Proc, free_port, signals_held, spawn, terminate, wait_healthy

if TYPE_CHECKING:
    from llmd_kserve.stack.local import StackConfig

log = logging.getLogger(__name__)
RESTARTS = 5
"""``up`` restarts a replica that exits; it gives up after this many exits in a row, each within
:data:`STABLE_S` of its start."""
STABLE_S = 60.0


class ReplicaMixin:
    """The replica, balancer and Redis parts of ``LocalStack`` (which provides the attributes declared here)."""

    settings: StackConfig
    log_dir: Path | None
    router_url: str
    state_url: str | None
    replicas: list[Proc]
    balancer: Proc | None
    redis: Proc | None
    replica_restarts: int
    redis_restarts: int
    _procs: list[Proc]
    _router: Proc | None
    _replica_argv: list[list[str]]
    _replica_started: list[float]
    _replica_failures: list[int]

    def _spawn(self, name: str, argv: Sequence[str], url: str, health: str = "/health", **options: Any) -> Proc:
        raise NotImplementedError

    def _router_argv(self, config: str, port: int, replica: int | None = None) -> list[str]:
        raise NotImplementedError

    def _start_redis(self) -> str:
        """``redis-server`` on a free port, data in ``<log_dir>/redis``; returns its URL."""
        from llmd_kserve.stack.redis import redis_answers, redis_argv

        assert self.log_dir is not None
        port = free_port("127.0.0.1")
        url = f"redis://127.0.0.1:{port}/0"
        self.redis = self._spawn("redis", redis_argv(self.log_dir / "redis", port), url,
                                 probe=partial(redis_answers, url))
        wait_healthy([self.redis], self.settings.startup_timeout)
        return url

    def _start_replicas(self, config: str) -> None:
        """N routers on free ports, each ready (its KV index warm), then Envoy balancing over them."""
        from llmd_kserve.epp.envoy import envoy_argv
        from llmd_kserve.stack.balancer import BalancerConfig, wait_balanced

        cfg = self.settings
        assert self.log_dir is not None
        for i in range(cfg.routers):
            port = free_port(cfg.host)
            argv = self._router_argv(config, port, i)
            self._replica_argv.append(argv)
            self._replica_started.append(time.monotonic())
            self._replica_failures.append(0)
            self.replicas.append(self._spawn(f"router-{i}", argv, f"http://{cfg.host}:{port}", "/ready"))
        self._router = self.replicas[0]
        wait_healthy(self._procs, cfg.startup_timeout)
        port, admin_port = cfg.port or free_port(cfg.host), free_port("127.0.0.1")
        targets = tuple(p.url.split("://", 1)[1] for p in self.replicas)
        balancer = BalancerConfig(routers=targets, host=cfg.host, port=port, admin_port=admin_port,
                                  lb_policy=cfg.balancer)  # type: ignore[arg-type]
        path = self.log_dir / "balancer.json"
        path.write_text(json.dumps(balancer.bootstrap(), indent=1))
        admin = f"http://127.0.0.1:{admin_port}"
        self.balancer = self._spawn("balancer", envoy_argv(path), admin, "/ready")
        wait_healthy([self.balancer], cfg.startup_timeout)
        wait_balanced(admin, targets, cfg.startup_timeout)
        self.router_url = f"http://{cfg.host}:{port}"

    def restart_replica(self, i: int, *, wait: bool = True) -> None:
        """Start router replica ``i`` again, same port and flags (stopping it first if it runs); the balancer sends
        it requests again once its ``/ready`` passes."""
        old = self.replicas[i]
        assert self.log_dir is not None
        with signals_held():
            if old.popen.poll() is None:
                terminate([old])
            else:
                old.log.close()
            new = spawn(old.name, self._replica_argv[i], self.log_dir, old.url, old.health)
            self._procs[self._procs.index(old)] = self.replicas[i] = new
            if self._router is old:
                self._router = new
        self._replica_started[i] = time.monotonic()
        if wait:
            wait_healthy([new], self.settings.startup_timeout)

    def stop_redis(self) -> None:
        """Stop the stack's ``redis-server`` (``redis``), keeping its data for :meth:`start_redis_again`."""
        assert self.redis is not None
        with signals_held():
            terminate([self.redis])

    def start_redis_again(self) -> None:
        """Start the stack's ``redis-server`` again on the same port and data (after a stop or a kill)."""
        from llmd_kserve.stack.redis import redis_answers, redis_argv

        old = self.redis
        assert old is not None and self.log_dir is not None and self.state_url is not None
        if old.popen.poll() is None:
            self.stop_redis()
        old.log.close()
        port = int(self.state_url.rsplit(":", 1)[1].split("/")[0])
        with signals_held():
            new = spawn(old.name, redis_argv(self.log_dir / "redis", port), self.log_dir, old.url,
                        probe=partial(redis_answers, old.url))
            self._procs[self._procs.index(old)] = self.redis = new
        wait_healthy([new], self.settings.startup_timeout)

    def _restart_dead_replicas(self, dead: list[str]) -> None:
        """Restart each replica named in ``dead`` (removing it from the list) unless it keeps exiting; the stack's
        Redis too (on its data: the routers refuse keys with limits meanwhile, by their failure policy)."""
        if self.redis is not None and self.redis.name in dead and self.redis_restarts < RESTARTS:
            log.warning("redis-server exited with code %s; restarting it", self.redis.popen.returncode)
            self.start_redis_again()
            self.redis_restarts += 1
            dead.remove(self.redis.name)
        for i, p in enumerate(self.replicas):
            if p.name in dead and self._replica_may_restart(i):
                log.warning("%s exited with code %s; restarting it (log: %s)", p.name, p.popen.returncode, p.log.name)
                self.restart_replica(i, wait=False)
                self.replica_restarts += 1
                dead.remove(p.name)

    def _replica_may_restart(self, i: int) -> bool:
        quick = time.monotonic() - self._replica_started[i] < STABLE_S
        self._replica_failures[i] = self._replica_failures[i] + 1 if quick else 1
        return self._replica_failures[i] <= RESTARTS


def check_replicas(cfg: StackConfig) -> None:
    if cfg.routers < 1:
        raise ConfigError(f"must be >= 1, got {cfg.routers}", "routers")
    if cfg.routers > 1 and cfg.gateway != "none":
        raise ConfigError("router replicas (--routers > 1) run without --gateway envoy", "routers")
    if cfg.balancer not in ("round-robin", "least-request"):
        raise ConfigError(f"must be round-robin or least-request, got {cfg.balancer!r}", "balancer")
    if cfg.redis and cfg.state_url:
        raise ConfigError("give --redis (a local redis-server) or --state-url, not both", "redis")


def per_replica(args: Sequence[str], replica: int) -> list[str]:
    """The router flags of replica ``replica``: ``--audit-file PATH`` becomes ``PATH`` with ``.router-<i>`` before
    its suffix (one hash chain per process: ``audit.jsonl`` -> ``audit.router-0.jsonl``)."""
    out, it = [], iter(args)
    for a in it:
        name, eq, value = a.partition("=")
        if name == "--audit-file":
            value = value if eq else next(it, "")
            if not value:
                raise ConfigError("--audit-file needs a path", "router-arg")
            p = Path(value)
            a = f"--audit-file={p.with_name(f'{p.stem}.router-{replica}{p.suffix}')}"
        out.append(a)
    return out
