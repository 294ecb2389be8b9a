"""The tamper-evident JSONL audit trail's writer: hash-chained records, written in all-or-nothing batches,
rotation that keeps the chain (the record format and ``verify`` are in ``governance.chain``).

Each line is one JSON object ``{"seq", "ts", "prev", ..., "hash"}`` where ``hash`` is the SHA-256 of the record's
canonical JSON without ``hash`` (sorted keys, no spaces) and ``prev`` is the previous record's ``hash`` (64 zeros
for the first record ever). With a chain key, ``hash`` is an HMAC-SHA256 under that key instead and the record says
``"chain": "hmac-sha256"``: then nobody without the key can re-hash an edited chain. Editing a record breaks its
hash; dropping or reordering breaks ``seq`` and ``prev``.

A batch of records is sealed and written together: if the write (or its fsync) fails, the file is cut back to the
last good byte and ``seq``/``head`` roll back, so the chain on disk stays whole; the next batch that reaches the
disk starts with a ``write_failed`` record (how many records were lost, when, why). Rotation (size or age) renames
the file to ``<name>.<n>`` (n = 1, 2, …); a file that does not start the chain starts with a ``rotated`` record
chained to the last one, so ``verify(old…, current)`` checks the whole history. On start the trail continues the
chain of the existing file; a torn or unparseable last line (a crash mid-write) is cut off and a ``recovered``
record says how many bytes. The head (``seq``, ``hash``) is logged at WARNING on each rotation and at shutdown:
keep it elsewhere, it is what shows records dropped from the end.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmd_kserve.governance.chain import GENESIS, KEYED, VerifyReport, chain_key, record_hash, verify
from llmd_kserve.governance.chain import canonical as _canonical

__all__ = ["GENESIS", "AuditLog", "VerifyReport", "chain_key", "record_hash", "rotated_files", "verify"]
log = logging.getLogger(__name__)
_BLOCK = 1 << 16


def rotated_files(path: str | Path) -> list[Path]:
    """The rotated files of ``path`` (``path.1``, ``path.2``, …) oldest first, then ``path`` itself if present."""
    p = Path(path)
    olds = sorted((q for q in p.parent.glob(p.name + ".*") if q.suffix[1:].isdigit()), key=lambda q: int(q.suffix[1:]))
    return olds + ([p] if p.exists() else [])


def _last_line(f: Any, end: int) -> tuple[bytes, int]:
    """(last complete line of the first ``end`` bytes of ``f``, bytes after it without a newline); reads backwards
    in growing blocks, so a line of any length is found whole."""
    buf, pos = b"", end
    while pos > 0:
        last = buf.rfind(b"\n")
        if last >= 0 and buf.rfind(b"\n", 0, last) >= 0:
            break
        step = min(max(_BLOCK, len(buf)), pos)
        pos -= step
        f.seek(pos)
        buf = f.read(step) + buf
    last = buf.rfind(b"\n")
    if last < 0:
        return b"", len(buf)
    return buf[buf.rfind(b"\n", 0, last) + 1:last], len(buf) - last - 1


def _parse(line: bytes) -> dict[str, Any] | None:
    try:
        rec = json.loads(line)
        return rec if isinstance(rec, dict) and isinstance(rec["seq"], int) and isinstance(rec["hash"], str) else None
    except (ValueError, KeyError):
        return None


def _error_name(exc: OSError) -> str:
    name = errno.errorcode.get(exc.errno or 0, "")
    return f"{name}: {exc.strerror}" if name and exc.strerror else str(exc)


@dataclass(slots=True)
class AuditLog:
    """The synchronous core: ``commit`` seals a batch of records and writes it, all or nothing. Call from one thread
    at a time, in the order records should appear."""

    path: Path
    max_bytes: int | None = None
    max_age_s: float | None = None
    clock: Callable[[], float] = time.time
    chain_key: bytes | None = None
    seq: int = 0
    """The last record that reached the file (never a record that failed to)."""
    head: str = GENESIS
    _size: int = 0
    _opened_at: float = 0.0
    _fd: int = -1
    _dirty: bool = False
    _failure: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        recovered = self._resume()
        self._open()
        if recovered:
            self.commit([{"event": "recovered", **recovered}])

    def _resume(self) -> dict[str, Any] | None:
        """Continue the chain of the newest record on disk; cut a torn or unparseable end of the current file and
        return what the ``recovered`` record says about it."""
        recovered = None
        for p in reversed(rotated_files(self.path)):
            with open(p, "rb") as f:
                size = f.seek(0, os.SEEK_END)
                line, torn = _last_line(f, size)
                rec, cut, reason = _parse(line), torn, "torn last record"
                if line and rec is None and p == self.path:  # a whole last line that is no record: cut it too
                    before, _ = _last_line(f, size - torn - len(line) - 1)
                    rec, cut, reason, line = _parse(before), cut + len(line) + 1, "unparseable last record", before
                if line and rec is None:
                    raise OSError(f"{p} does not end with an audit record (is it an audit log?)")
                if cut and p == self.path:
                    f.seek(size - cut)
                    digest = hashlib.sha256(f.read()).hexdigest()
                    os.truncate(p, size - cut)
                    log.warning("audit log %s: cut %d bytes of a %s", p, cut, reason)
                    recovered = {"truncated_bytes": cut, "truncated_sha256": digest, "reason": reason}
            if rec is not None:
                self.seq, self.head = rec["seq"], rec["hash"]
                log.warning("audit log %s continues at seq %d head %s", self.path, self.seq, self.head)
                break
        return recovered

    def _open(self) -> None:
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._size = os.fstat(self._fd).st_size
        self._opened_at = self.clock()

    def _due(self) -> bool:
        return self._size > 0 and (
            (self.max_bytes is not None and self._size >= self.max_bytes)
            or (self.max_age_s is not None and self.clock() - self._opened_at >= self.max_age_s))

    def _prepare(self) -> None:
        """Before a batch: reopen after a failed rotation, cut back a failed write, rotate when due."""
        if self._fd < 0:
            self._open()
        if self._dirty:
            os.ftruncate(self._fd, self._size)
            self._dirty = False
        if self._due():
            self._rotate()

    def _rotate(self) -> None:
        os.fsync(self._fd)
        olds = rotated_files(self.path)[:-1]
        n = int(olds[-1].suffix[1:]) + 1 if olds else 1
        target = self.path.with_name(f"{self.path.name}.{n}")
        os.replace(self.path, target)
        os.close(self._fd)
        self._fd = -1
        log.warning("audit log rotated to %s at seq %d head %s", target, self.seq, self.head)
        self._open()

    def _line(self, fields: dict[str, Any]) -> bytes:
        self.seq += 1
        rec = {**fields, "seq": self.seq, "ts": round(self.clock(), 6), "prev": self.head}
        if self.chain_key is not None:
            rec["chain"] = KEYED
        rec["hash"] = self.head = record_hash(rec, self.chain_key)
        return _canonical(rec) + b"\n"

    def commit(self, batch: Sequence[dict[str, Any]], sync: bool = True) -> None:
        """Seal ``batch`` and write it (then fsync when ``sync``). On an OSError nothing of it stays in the file,
        ``seq``/``head`` are as before, the loss is remembered for the next ``write_failed`` record, and it raises."""
        try:
            self._prepare()
        except OSError as exc:
            self._note_failure(len(batch), exc)
            raise
        seq, head = self.seq, self.head
        try:
            lines = [self._line({"event": "rotated"})] if self._size == 0 and self.seq > 0 else []
            if self._failure is not None:
                lines.append(self._line({"event": "write_failed", **self._failure}))
            data = b"".join(lines + [self._line(f) for f in batch])
            self._write_all(data)
            if sync:
                os.fsync(self._fd)
        except BaseException as exc:
            self.seq, self.head = seq, head
            self._dirty = True
            try:
                os.ftruncate(self._fd, self._size)
                self._dirty = False
            except OSError:
                pass  # cut before the next batch
            if isinstance(exc, OSError):
                self._note_failure(len(batch), exc)
            raise
        self._size += len(data)
        if self._failure is not None:
            log.warning("audit log writes work again (%d records lost)", self._failure["lost_records"])
            self._failure = None

    def _write_all(self, data: bytes) -> None:
        while data:
            n = os.write(self._fd, data)
            data = data[n:]

    def _note_failure(self, lost: int, exc: OSError) -> None:
        now = round(self.clock(), 6)
        f = self._failure or {"lost_records": 0, "failed_writes": 0, "first_failure_ts": now}
        f.update(lost_records=f["lost_records"] + lost, failed_writes=f["failed_writes"] + 1, last_failure_ts=now,
                 error=_error_name(exc))
        self._failure = f
        log.error("audit log write failed (%d records not written): %s", lost, exc)

    def sync(self) -> None:
        """fsync what was written; a failure is remembered (next ``write_failed`` record) and raised."""
        try:
            if self._fd >= 0:
                os.fsync(self._fd)
        except OSError as exc:
            self._note_failure(0, exc)
            raise

    def append(self, fields: dict[str, Any], fsync: bool = True) -> None:
        """Seal, write and (by default) fsync one record, synchronously."""
        self.commit([fields], fsync)

    def close(self) -> None:
        if self._fd >= 0:
            try:
                os.fsync(self._fd)
            except OSError as exc:
                log.error("audit log fsync at close failed: %s", exc)
            os.close(self._fd)
            self._fd = -1
            log.warning("audit log closed at seq %d head %s", self.seq, self.head)
