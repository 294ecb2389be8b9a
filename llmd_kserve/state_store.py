"""One Redis connection pool for state shared by replicas (``--state-url``), with its failure accounting.

Whatever keeps state in Redis goes through :meth:`StateStore.call`. Each failed call is counted in
``llmd_router_state_errors_total{op}``. The first failure of an outage is logged, and one more line when Redis
answers again. After a failure, calls fail at once for ``pause_s``, so an unreachable Redis costs a request no
timeout. The client reconnects on its own. Keys are ``llmd:<tenant>:<part>:...`` (:meth:`StateStore.key`).
Users: the governance limiter (``governance.shared_state``); sessions can share the same store.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from llmd_kserve.errors import ConfigError

log = logging.getLogger(__name__)
T = TypeVar("T")
TIMEOUT_S = 0.5
"""Connect and reply timeout of one Redis call."""
PAUSE_S = 1.0
"""After a failed call, calls fail at once for this long (an unreachable Redis costs a request no timeout)."""


class StateStore:
    """One Redis connection pool with its error counting and outage logging: the seam other shared state (sessions)
    can use too. ``call`` runs one Redis operation; a failure is counted, logged once per outage, and re-raised as
    ``StateUnavailable``."""

    def __init__(self, url: str, registry: Any = None, timeout_s: float = TIMEOUT_S, pause_s: float = PAUSE_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        try:
            import redis.asyncio as aioredis
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff
            from redis.exceptions import RedisError
        except ImportError:
            raise ConfigError("needs the redis package: pip install 'llmd-kserve[redis]'", "state_url") from None
        if not url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError(f"must be redis://host:port/db (or rediss://, unix://), got {url!r}", "state_url")
        self.url = url
        self.client = aioredis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
                                              retry=Retry(NoBackoff(), 1), decode_responses=True)
        self._errors_type: tuple[type[BaseException], ...] = (RedisError, OSError)
        self.errors = None
        if registry is not None:
            from prometheus_client import Counter

            self.errors = Counter("llmd_router_state_errors", "Shared-state (Redis) calls that failed, by operation",
                                  ["op"], registry=registry)
        self.down = False
        self.failures = 0
        self.pause_s, self.clock, self._failed_at = pause_s, clock, -pause_s

    def _failed(self, op: str) -> None:
        self.failures += 1
        if self.errors is not None:
            self.errors.labels(op).inc()

    async def call(self, op: str, fn: Callable[[], Awaitable[T]]) -> T:
        if self.down and self.clock() - self._failed_at < self.pause_s:
            self._failed(op)
            raise StateUnavailable("paused after a failed call")
        try:
            result = await fn()
        except self._errors_type as exc:
            self._failed(op)
            self._failed_at = self.clock()
            if not self.down:
                self.down = True
                log.warning("shared state %s unreachable (%s: %s); failure policy applies until it is back",
                            self.url, type(exc).__name__, exc)
            raise StateUnavailable(str(exc)) from exc
        if self.down:
            self.down = False
            log.warning("shared state %s reachable again (%d calls failed meanwhile)", self.url, self.failures)
            self.failures = 0
        return result

    @staticmethod
    def key(tenant: str, *parts: str) -> str:
        """``llmd:<tenant>:<part>:...``: every key of a tenant under one prefix."""
        return ":".join(("llmd", tenant, *parts))

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.client.aclose()


class StateUnavailable(Exception):
    """Redis could not be reached (already counted and logged)."""
