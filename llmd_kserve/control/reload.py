"""Scheduler config hot reload: the swappable scheduler, the config reloader and the ``--config`` file watch.

A new config builds a new ``Scheduler`` over the same plugin context (tokenizer, KV index, RNG, clock) that reuses
every plugin whose type, name and parameters did not change (so the in-flight load, the approximate-prefix LRU and
session affinity survive a weight change) and is swapped in between two decisions (one event loop: no decision
sees half a config). A request keeps the scheduler it was scheduled by: its ``on_prefill_complete``/``on_complete``
go there. A bad config raises ``ConfigError`` with the path of the bad field; the active one stays.

The admin API over it (``GET/POST /admin/config``) is :mod:`llmd_kserve.router.admin`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmd_kserve.aio import cancel_and_wait
from llmd_kserve.config.build import build_scheduler
from llmd_kserve.config.loader import parse_text, read_mapping
from llmd_kserve.config.schema import SchedulerConfig
from llmd_kserve.config.validate import check
from llmd_kserve.control.holder import SchedulerHolder
from llmd_kserve.errors import ConfigError, LlmdError
from llmd_kserve.scheduling.scheduler import Scheduler

log = logging.getLogger(__name__)


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


def parse_document(raw: bytes | str, content_type: str = "", source: str = "body") -> Any:
    """An EndpointPickerConfig document sent as JSON (a ``json`` content type) or YAML -> the parsed mapping;
    ConfigError at ``source[:line:col]`` when empty, unreadable, aliased (YAML ``*name``) or nested too deep."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    if not text.strip():
        raise ConfigError("empty document: send an EndpointPickerConfig (YAML or JSON)", source)
    return parse_text(text, source, "json" if "json" in content_type else "yaml")


@dataclass(frozen=True, slots=True)
class Change:
    """Who asked for a config change: what its audit record and log line name."""

    source: str
    """``api`` or ``file:<path>``."""
    key: str | None = None
    """The operator key's id (admin API with keys configured)."""
    client: str | None = None
    """The client's IP address (admin API)."""


class AuditUnavailable(LlmdError):
    """The audit trail could not record a config change, so it was not applied."""


AuditHook = Callable[[dict[str, Any]], Awaitable[None]]


class ConfigReloader:
    """Applies new configs to a ``SchedulerHolder``; optionally watches a config file (by content hash).

    Every applied, unchanged or refused change is logged at WARNING with who asked, its source and the config
    hashes before and after; through :meth:`submit` (the admin API and the file watch) it is also written to the
    audit trail (``audit``), and a change that cannot be recorded there is not applied."""

    def __init__(self, scheduler: SchedulerHolder, source: str, watch: str | Path | None = None,
                 poll_interval: float = 1.0, on_change: Callable[[str, bool], None] | None = None,
                 clock: Callable[[], float] = time.time, audit: AuditHook | None = None) -> None:
        self.scheduler = scheduler
        self._clock = clock
        config = scheduler.current.config
        self.active = ActiveConfig(config, config_hash(config), f"startup:{source}", clock(), 0)
        self.last_error: dict[str, Any] | None = None
        """The last refused config: ``{"source", "message", "param", "time"}``."""
        self.in_flight_at_swap = 0
        """Requests that were in flight at the last swap (they finish on the scheduler that scheduled them)."""
        self.watch_path = Path(watch) if watch is not None else None
        self.poll_interval = poll_interval
        self.audit = audit
        self._on_change = on_change
        self._seen = self._file_digest()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    # --- validate, build, swap ----------------------------------------------------------------------------------
    @staticmethod
    def _validate(doc: Any, content_type: str, source: str) -> tuple[SchedulerConfig, str]:
        """Parse, schema-check and semantically check (plugin Params included), then hash: pure, thread-safe."""
        if isinstance(doc, bytes | str):
            doc = parse_document(doc, content_type, source.removeprefix("file:") if source != "api" else "body")
        config = doc if isinstance(doc, SchedulerConfig) else read_mapping(doc, source)
        check(config)  # before hashing: parameters are validated Params, never an arbitrary object
        return config, config_hash(config)

    def _build(self, config: SchedulerConfig) -> Scheduler:
        try:
            return build_scheduler(config, self.scheduler.current.ctx, carry_over=self.scheduler.current)
        except (TypeError, ValueError, KeyError) as exc:  # a plugin factory refusing its parameters
            raise ConfigError(str(exc) or type(exc).__name__, "plugins") from exc

    def _swap(self, config: SchedulerConfig, h: str, new: Scheduler, change: Change) -> ActiveConfig:
        kept = new.reused_plugins(self.scheduler.current)
        self.scheduler.swap(new)
        self.in_flight_at_swap = self.scheduler.in_flight()
        self.active = ActiveConfig(config, h, change.source, self._clock(), self.active.generation + 1)
        self.last_error = None
        log.info("scheduler config %s kept the state of %s", h, ", ".join(kept) or "nothing")
        if self._on_change is not None:
            self._on_change(change.source.split(":", 1)[0], True)
        return self.active

    @staticmethod
    def _fields(change: Change, result: str, before: str, after: str | None) -> dict[str, Any]:
        """The audit record of one change (``event: admin`` is added by the audit hook)."""
        return {"action": "config", "result": result, "source": change.source, "key": change.key,
                "client": change.client, "config_hash_before": before, "config_hash_after": after}

    def _note(self, change: Change, result: str, before: str, after: str | None,
              error: ConfigError | None = None) -> dict[str, Any]:
        """The audit fields of one change, logged at WARNING (a refusal also sets ``last_error`` and is counted)."""
        fields = self._fields(change, result, before, after)
        if error is not None:
            fields["error"] = str(error)
            self.last_error = {"source": change.source, "message": str(error), "param": error.path,
                               "time": self._clock()}
            if self._on_change is not None:
                self._on_change(change.source.split(":", 1)[0], False)
        log.warning("scheduler config %s from %s (key %s, client %s): %s -> %s%s", result, change.source,
                    change.key or "-", change.client or "-", before, after or "-", f": {error}" if error else "")
        return fields

    def apply(self, config: SchedulerConfig | Any, source: str = "api") -> ActiveConfig:
        """Validate ``config`` (a SchedulerConfig or a parsed EndpointPickerConfig mapping), build its scheduler and
        swap it in, without an audit record (in-process use). Raises ConfigError (path of the bad field) and keeps
        the active config on any problem."""
        change, before = Change(source), self.active.hash
        try:
            config, h = self._validate(config, "", source)
            if h == before:
                return self.active
            new = self._build(config)
        except ConfigError as exc:
            self._note(change, "refused", before, None, exc)
            raise
        active = self._swap(config, h, new, change)
        self._note(change, "applied", before, h)
        return active

    async def submit(self, doc: bytes | str | Any, change: Change, content_type: str = "") -> ActiveConfig:
        """Validate ``doc`` (JSON or YAML text, a mapping or a SchedulerConfig) off the event loop, write the
        change's audit record, then swap it in. Raises ConfigError (refused) or AuditUnavailable; either way the
        active config stays."""
        async with self._lock:
            before = self.active.hash
            try:
                config, h = await asyncio.to_thread(self._validate, doc, content_type, change.source)
                new = self._build(config) if h != before else None
            except ConfigError as exc:
                await self._record(self._note(change, "refused", before, None, exc))
                raise
            if new is None:
                await self._record(self._note(change, "unchanged", before, h))
                return self.active
            try:  # recorded before it takes effect: no change without its record
                await self._record(self._fields(change, "applied", before, h), required=True)
            except OSError as exc:
                log.error("scheduler config %s from %s not applied: the audit trail cannot be written (%s)",
                          h, change.source, exc)
                raise AuditUnavailable("The audit trail cannot be written; the config change was not applied "
                                       f"(the active config {before} stays).") from None
            active = self._swap(config, h, new, change)
            self._note(change, "applied", before, h)
            return active

    async def _record(self, fields: dict[str, Any], required: bool = False) -> None:
        """Write ``fields`` to the audit trail (when there is one); only a ``required`` record raises OSError."""
        if self.audit is None:
            return
        try:
            await self.audit(fields)
        except OSError:
            if required:
                raise
            log.error("the audit record of a scheduler config change was not written")

    def status(self) -> dict[str, Any]:
        """What ``GET /admin/config`` returns."""
        a = self.active
        return {"config_hash": a.hash, "source": a.source, "applied_at": a.applied_at, "generation": a.generation,
                "config": config_document(a.config), "last_error": self.last_error,
                "watching": str(self.watch_path) if self.watch_path is not None else None}

    # --- the config file watch ----------------------------------------------------------------------------------
    def _read_file(self) -> bytes | None:
        if self.watch_path is None:
            return None
        try:
            return self.watch_path.read_bytes()
        except OSError:
            return None

    def _file_digest(self) -> str | None:
        data = self._read_file()
        return hashlib.sha256(data).hexdigest() if data is not None else None

    async def check_file(self) -> bool:
        """Apply the watched file if its content changed (any edit: size and mtime are not trusted); returns
        whether a new config was applied. A change the audit trail could not record is tried again next time."""
        data = self._read_file()
        digest = hashlib.sha256(data).hexdigest() if data is not None else None
        if data is None or digest == self._seen:
            return False
        before = self.active.generation
        try:
            await self.submit(data, Change(f"file:{self.watch_path}"))
        except AuditUnavailable:
            return False
        except ConfigError:
            pass
        self._seen = digest
        return self.active.generation != before

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.poll_interval)
            try:
                await self.check_file()
            except Exception:  # never let the watch die
                log.exception("config file watch failed")

    def start(self) -> None:
        if self.watch_path is not None and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="config-file-watcher")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None


def reload_counter(registry: Any) -> Callable[[str, bool], None]:
    """``llmd_router_config_reloads_total{source="file"|"api", result="applied"|"refused"}`` in ``registry``."""
    from prometheus_client import Counter

    counter = Counter("config_reloads", "Scheduler config changes applied or refused, by source", ["source", "result"],
                      namespace="llmd_router", registry=registry)
    return lambda source, ok: counter.labels(source, "applied" if ok else "refused").inc()
