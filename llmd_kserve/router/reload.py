"""Scheduler config hot reload: the swappable scheduler, the ``--config`` file watch and ``GET/POST /admin/config``.

A new config builds a new ``Scheduler`` over the same plugin context (tokenizer, KV index, RNG, clock) that reuses
every plugin whose type, name and parameters did not change (so the in-flight load, the approximate-prefix LRU and
session affinity survive a weight change) and is swapped in between two decisions (one event loop: no decision
sees half a config). A request keeps the scheduler it was scheduled by: its ``on_prefill_complete``/``on_complete``
go there. A bad config raises ``ConfigError`` with the path of the bad field; the active one stays.

Admin access (``/admin/config``): off unless the router runs with ``--admin``; then, with API keys configured, a
valid ``Authorization: Bearer <key>``; without keys, loopback clients only (an unauthenticated control plane never
listens beyond this host).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import os
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import yaml
from aiohttp import web

from llmd_kserve.config.build import build_scheduler
from llmd_kserve.config.loader import load_config, read_mapping
from llmd_kserve.config.schema import SchedulerConfig
from llmd_kserve.errors import ConfigError, InvalidRequestError
from llmd_kserve.scheduling.scheduler import Scheduler, SchedulingResult
from llmd_kserve.types import EndpointId, EndpointState, LLMRequest, RequestOutcome

log = logging.getLogger(__name__)
_encode = msgspec.json.Encoder().encode
MAX_CONFIG_BYTES = 1024 * 1024
MAX_TRACKED = 1_000_000
"""Most scheduled-but-not-completed results remembered (each is a request in flight)."""


def config_document(config: SchedulerConfig) -> dict[str, Any]:
    """The config as the EndpointPickerConfig mapping it was written as (camelCase keys, unset fields left out)."""
    return config.document()


def config_hash(config: SchedulerConfig) -> str:
    """Short SHA-256 of the canonical JSON of the config (equal configs, equal hashes, whatever their source)."""
    return config.digest()


@dataclass(frozen=True, slots=True)
class ActiveConfig:
    """The config the router schedules with now."""

    config: SchedulerConfig
    hash: str
    source: str
    """``file:<path>``, ``api`` or ``startup:<name or path>``."""
    applied_at: float
    """Unix time, seconds."""
    generation: int
    """0 at startup, +1 per applied change."""


class ReloadableScheduler:
    """The scheduler the proxy holds: schedules with the current ``Scheduler``; routes each result's callbacks to
    the scheduler that produced it; anything else (``producers``, ``ctx``, …) reads the current one."""

    def __init__(self, scheduler: Scheduler) -> None:
        self._current = scheduler
        self._origin: dict[int, tuple[Scheduler, SchedulingResult]] = {}
        """id(result) -> (its scheduler, the result: kept alive so its id stays unique) until ``on_complete``."""

    @property
    def current(self) -> Scheduler:
        return self._current

    def swap(self, scheduler: Scheduler) -> None:
        self._current = scheduler

    def __getattr__(self, name: str) -> Any:
        return getattr(self._current, name)

    def schedule(self, request: LLMRequest, endpoints: Sequence[EndpointState],
                 exclude: Collection[EndpointId] = ()) -> SchedulingResult:
        sched = self._current
        result = sched.schedule(request, endpoints, exclude)
        self._origin[id(result)] = (sched, result)
        if len(self._origin) > MAX_TRACKED:  # a caller that never completes: forget the oldest, do not grow
            self._origin.pop(next(iter(self._origin)))
        return result

    def _owner(self, result: Any, pop: bool) -> Scheduler:
        entry = self._origin.pop(id(result), None) if pop else self._origin.get(id(result))
        return entry[0] if entry is not None and entry[1] is result else self._current

    def on_complete(self, request: LLMRequest, result: Any, outcome: RequestOutcome) -> None:
        self._owner(result, pop=True).on_complete(request, result, outcome)

    def on_prefill_complete(self, request: LLMRequest, result: Any, outcome: RequestOutcome) -> None:
        self._owner(result, pop=False).on_prefill_complete(request, result, outcome)

    def remove_endpoint(self, endpoint_id: EndpointId) -> None:
        """Forget the endpoint in the current scheduler and in every older one still serving requests."""
        seen = {id(self._current): self._current}
        for sched, _ in self._origin.values():
            seen.setdefault(id(sched), sched)
        for sched in seen.values():
            sched.remove_endpoint(endpoint_id)

    def in_flight(self) -> int:
        """Results scheduled and not completed yet (all configs)."""
        return len(self._origin)


def parse_document(raw: bytes | str, content_type: str = "") -> Any:
    """An EndpointPickerConfig document sent as JSON or YAML -> the parsed mapping; ConfigError when unreadable."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    if not text.strip():
        raise ConfigError("empty body: send an EndpointPickerConfig document (YAML or JSON)", "body")
    try:
        return json.loads(text) if "json" in content_type else yaml.safe_load(text)
    except ValueError as exc:
        raise ConfigError(f"invalid JSON: {exc}", "body") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"body:{mark.line + 1}:{mark.column + 1}" if mark else "body"
        raise ConfigError(f"invalid YAML: {getattr(exc, 'problem', exc)}", where) from None


class ConfigReloader:
    """Applies new configs to a ``ReloadableScheduler``; optionally watches a config file (mtime, size, content)."""

    def __init__(self, scheduler: ReloadableScheduler, source: str, watch: str | Path | None = None,
                 poll_interval: float = 1.0, on_change: Callable[[str, bool], None] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.scheduler = scheduler
        self._clock = clock
        config = scheduler.current.config
        self.active = ActiveConfig(config, config_hash(config), f"startup:{source}", clock(), 0)
        self.last_error: dict[str, Any] | None = None
        self.in_flight_at_swap = 0
        """Requests that were in flight at the last swap (they finish on the scheduler that scheduled them)."""
        """The last refused config: ``{"source", "message", "param", "time"}``."""
        self.watch_path = Path(watch) if watch is not None else None
        self.poll_interval = poll_interval
        self._on_change = on_change
        self._stamp = self._stat()
        self._task: asyncio.Task[None] | None = None

    def apply(self, config: SchedulerConfig | Any, source: str = "api") -> ActiveConfig:
        """Validate ``config`` (a SchedulerConfig or a parsed EndpointPickerConfig mapping), build its scheduler and
        swap it in. Raises ConfigError (path of the bad field) and keeps the active config on any problem."""
        try:
            if not isinstance(config, SchedulerConfig):
                config = read_mapping(config, source)  # build_scheduler runs the semantic checks, once
            h = config_hash(config)
            if h == self.active.hash:
                return self.active
            new = build_scheduler(config, self.scheduler.ctx, carry_over=self.scheduler.current)
        except ConfigError as exc:
            self._refused(source, exc)
            raise
        except (TypeError, ValueError, KeyError) as exc:  # a plugin factory refusing its parameters
            err = ConfigError(str(exc) or type(exc).__name__, "plugins")
            self._refused(source, err)
            raise err from exc
        kept = new.reused_plugins(self.scheduler.current)
        self.scheduler.swap(new)
        self.in_flight_at_swap = self.scheduler.in_flight()
        self.active = ActiveConfig(config, h, source, self._clock(), self.active.generation + 1)
        self.last_error = None
        log.info("scheduler config %s applied from %s (kept state of %s)", h, source, ", ".join(kept) or "nothing")
        if self._on_change is not None:
            self._on_change(source.split(":", 1)[0], True)
        return self.active

    def apply_document(self, raw: bytes | str, content_type: str = "", source: str = "api") -> ActiveConfig:
        """Parse an EndpointPickerConfig sent as JSON or YAML and :meth:`apply` it."""
        try:
            data = parse_document(raw, content_type)
        except ConfigError as exc:
            self._refused(source, exc)
            raise
        return self.apply(data, source)

    def _refused(self, source: str, exc: ConfigError) -> None:
        self.last_error = {"source": source, "message": str(exc), "param": exc.path, "time": self._clock()}
        log.warning("refused scheduler config from %s: %s", source, exc)
        if self._on_change is not None:
            self._on_change(source.split(":", 1)[0], False)

    def status(self) -> dict[str, Any]:
        """What ``GET /admin/config`` returns."""
        a = self.active
        return {"config_hash": a.hash, "source": a.source, "applied_at": a.applied_at, "generation": a.generation,
                "config": config_document(a.config), "last_error": self.last_error,
                "watching": str(self.watch_path) if self.watch_path is not None else None}

    # --- the config file watch --------------------------------------------------------------------------------------
    def _stat(self) -> tuple[int, int] | None:
        if self.watch_path is None:
            return None
        try:
            st = os.stat(self.watch_path)
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size

    def check_file(self) -> bool:
        """Reload the watched file if it changed on disk; returns whether a new config was applied."""
        stamp = self._stat()
        if stamp is None or stamp == self._stamp:
            return False
        self._stamp = stamp
        before = self.active.generation
        try:
            self.apply(load_config(self.watch_path), f"file:{self.watch_path}")  # type: ignore[arg-type]
        except ConfigError as exc:
            if self.last_error is None or self.last_error["message"] != str(exc):
                self._refused(f"file:{self.watch_path}", exc)
            return False
        return self.active.generation != before

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.poll_interval)
            try:
                self.check_file()
            except Exception:  # never let the watch die
                log.exception("config file watch failed")

    def start(self) -> None:
        if self.watch_path is not None and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="config-file-watcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None


def reload_counter(registry: Any) -> Callable[[str, bool], None]:
    """``llmd_router_config_reloads_total{source="file"|"api", result="applied"|"refused"}`` in ``registry``."""
    from prometheus_client import Counter

    counter = Counter("config_reloads", "Scheduler config changes applied or refused, by source", ["source", "result"],
                      namespace="llmd_router", registry=registry)
    return lambda source, ok: counter.labels(source, "applied" if ok else "refused").inc()


def _is_loopback(remote: str | None) -> bool:
    try:
        return remote is not None and ipaddress.ip_address(remote.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


class AdminAPI:
    """``GET /admin/config`` (the active config) and ``POST /admin/config`` (apply an EndpointPickerConfig)."""

    def __init__(self, reloader: Callable[[], ConfigReloader | None], authorize: Callable[[Mapping[str, str]], Any],
                 enabled: bool, keys_configured: bool) -> None:
        self._reloader = reloader
        self._authorize = authorize
        self.enabled = enabled
        self.keys_configured = keys_configured

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/admin/config", self.get_config)
        app.router.add_post("/admin/config", self.post_config)

    def _check(self, request: web.Request) -> ConfigReloader:
        if not self.enabled:
            raise InvalidRequestError("The admin API is off: start the router with --admin.", status=403,
                                      type_="PermissionDeniedError")
        if self.keys_configured:
            self._authorize(request.headers)
        elif not _is_loopback(request.remote):
            raise InvalidRequestError("Without API keys the admin API accepts loopback clients only; configure API "
                                      "keys to administer the router remotely.", status=403,
                                      type_="PermissionDeniedError")
        reloader = self._reloader()
        if reloader is None:
            raise InvalidRequestError("This router cannot reload its config.", status=503,
                                      type_="ServiceUnavailableError")
        return reloader

    @staticmethod
    def _error(exc: InvalidRequestError) -> web.Response:
        return web.Response(body=_encode(exc.body()), status=exc.status, content_type="application/json")

    async def get_config(self, request: web.Request) -> web.Response:
        try:
            reloader = self._check(request)
        except InvalidRequestError as exc:
            return self._error(exc)
        return web.Response(body=_encode(reloader.status()), content_type="application/json")

    async def post_config(self, request: web.Request) -> web.Response:
        try:
            reloader = self._check(request)
            if request.content_length is not None and request.content_length > MAX_CONFIG_BYTES:
                raise InvalidRequestError(f"config larger than {MAX_CONFIG_BYTES} bytes", "body", status=413,
                                          type_="RequestTooLargeError")
            raw = await request.content.read(MAX_CONFIG_BYTES + 1)
            if len(raw) > MAX_CONFIG_BYTES:
                raise InvalidRequestError(f"config larger than {MAX_CONFIG_BYTES} bytes", "body", status=413,
                                          type_="RequestTooLargeError")
            try:
                active = reloader.apply_document(raw, request.content_type, "api")
            except ConfigError as exc:
                msg = str(exc).removeprefix(f"{exc.path}: ") if exc.path else str(exc)
                raise InvalidRequestError(f"Invalid scheduler config at {exc.path or 'body'}: {msg} "
                                          f"(the active config {reloader.active.hash} stays)",
                                          exc.path or "body") from None
        except InvalidRequestError as exc:
            return self._error(exc)
        return web.Response(body=_encode({"status": "applied", "config_hash": active.hash,
                                          "generation": active.generation, "applied_at": active.applied_at,
                                          "in_flight_at_swap": reloader.in_flight_at_swap}),
                            content_type="application/json")
