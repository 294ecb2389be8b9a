"""The audit log on asyncio: records queued in arrival order, sealed, written and fsynced in batches off the event loop.

``await record(...)`` returns once the record is in the file, and raises OSError when it could not be written: the
caller refuses the request (fail closed) in every fsync mode. ``fsync="every"``: the record is also fsynced before
``record`` returns (group commit: one fsync covers every record that arrived meanwhile). ``fsync="interval"``: the
file is fsynced at most ``interval_s`` seconds after a write (a machine crash can lose that much); after a failed
fsync the next batch is fsynced before anyone is answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any, Literal

from llmd_kserve.governance.audit import AuditLog

log = logging.getLogger(__name__)
FsyncPolicy = Literal["every", "interval"]


class AuditTrail:
    def __init__(self, audit_log: AuditLog, fsync: FsyncPolicy = "every", interval_s: float = 1.0) -> None:
        self.log = audit_log
        self.fsync = fsync
        self.interval_s = interval_s
        self._pending: list[tuple[dict[str, Any], asyncio.Future[None]]] = []
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._last_sync = time.monotonic()
        self._unsynced = False
        self._sync_failed = False
        self._closing = False
        self.records = 0
        """Records written."""
        self.failures = 0
        """Failed writes or fsyncs."""
        self.failing = False
        """Whether the last write or fsync failed (until one succeeds)."""
        self.on_commit: Callable[[int], None] | None = None
        """Called with the head ``seq`` after each batch that reached the file."""
        self.on_failure: Callable[[], None] | None = None
        """Called after each failed write or fsync."""

    async def record(self, fields: dict[str, Any]) -> None:
        """Append one record (records keep the order of the calls); raises OSError when it was not written."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((fields, fut))
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run())
        await asyncio.shield(fut)

    async def _run(self) -> None:
        while self._pending or (self._unsynced and not self._closing):
            if self._pending:
                batch, self._pending = self._pending, []
                await self._commit(batch)
                continue
            delay = self._last_sync + self.interval_s - time.monotonic()
            if delay > 0:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), delay)
                continue
            await self._sync()

    async def _commit(self, batch: list[tuple[dict[str, Any], asyncio.Future[None]]]) -> None:
        now = time.monotonic()
        sync = self.fsync == "every" or self._sync_failed or now - self._last_sync >= self.interval_s
        try:
            await asyncio.to_thread(self.log.commit, [f for f, _ in batch], sync)
        except OSError as exc:  # disk full, I/O error: nothing of the batch is in the file; its callers fail
            self._failed()
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(exc)
                    fut.exception()  # a caller that went away must not leave it "never retrieved"
            return
        self.failing, self.records = False, self.records + len(batch)
        if sync:
            self._last_sync, self._unsynced, self._sync_failed = now, False, False
        else:
            self._unsynced = True
        if self.on_commit is not None:
            self.on_commit(self.log.seq)
        for _, fut in batch:
            if not fut.done():
                fut.set_result(None)

    async def _sync(self) -> None:
        self._last_sync, self._unsynced = time.monotonic(), False
        try:
            await asyncio.to_thread(self.log.sync)
        except OSError:
            self._failed()
            self._sync_failed = True  # the next batch is fsynced before its callers go on

    def _failed(self) -> None:
        self.failures += 1
        self.failing = True
        if self.on_failure is not None:
            self.on_failure()

    async def close(self) -> None:
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        await asyncio.to_thread(self.log.close)
