"""The audit log on asyncio: records sealed in arrival order, written and fsynced in batches off the event loop.

``fsync="every"``: ``await record(...)`` returns once the record is on disk (group commit: one fsync covers every
record that arrived meanwhile). ``fsync="interval"``: it returns at once; batches are written as they come and
fsynced at most every ``interval_s`` seconds (a crash can lose the last interval).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Literal

from llmd_kserve.governance.audit import AuditLog

log = logging.getLogger(__name__)
FsyncPolicy = Literal["every", "interval"]


class AuditTrail:
    def __init__(self, audit_log: AuditLog, fsync: FsyncPolicy = "every", interval_s: float = 1.0) -> None:
        self.log = audit_log
        self.fsync = fsync
        self.interval_s = interval_s
        self._pending: list[tuple[Any, asyncio.Future[None] | None]] = []
        self._task: asyncio.Task[None] | None = None
        self._last_sync = time.monotonic()
        self.records = 0
        self.failures = 0

    async def record(self, fields: dict[str, Any]) -> None:
        """Append one record (sealed now, so records keep the order of the calls)."""
        item = self.log.seal(fields)
        fut = asyncio.get_running_loop().create_future() if self.fsync == "every" else None
        self._pending.append((item, fut))
        self.records += 1
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain())
        if fut is not None:
            await asyncio.shield(fut)

    def _write(self, items: list[Any], sync: bool) -> None:
        self.log.write(items)
        if sync:
            self.log.sync()

    async def _drain(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            now = time.monotonic()
            sync = self.fsync == "every" or now - self._last_sync >= self.interval_s
            try:
                await asyncio.to_thread(self._write, [i for i, _ in batch], sync)
                if sync:
                    self._last_sync = now
                err: BaseException | None = None
            except OSError as exc:  # disk full, I/O error: the requests waiting on it fail (fail-closed)
                log.error("audit log write failed: %s", exc)
                self.failures += 1
                err = exc
            for _, fut in batch:
                if fut is not None and not fut.done():
                    if err is None:
                        fut.set_result(None)
                    else:
                        fut.set_exception(err)

    async def close(self) -> None:
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        await asyncio.to_thread(self.log.close)
