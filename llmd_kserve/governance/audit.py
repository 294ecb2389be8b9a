"""Tamper-evident JSONL audit trail: hash-chained records, group-committed fsync, rotation that keeps the chain.

Each line is one JSON object ``{"seq", "ts", "prev", ..., "hash"}`` where ``hash`` is the SHA-256 of the record's
canonical JSON without ``hash`` (sorted keys, no spaces) and ``prev`` is the previous record's ``hash`` (64 zeros
for the first record ever). Editing a record breaks its hash; dropping or reordering breaks ``seq`` and ``prev``.
Rotation (size or age) renames the file to ``<name>.<n>`` (n = 1, 2, …) and starts the new file with a
``rotated`` record chained to the last one, so ``verify(old…, current)`` checks the whole history. On start the
trail continues the chain of the existing file; a torn last line (a crash mid-write) is cut off and a
``recovered`` record says how many bytes. Dropping records from the *end* of the newest file is only detectable
against an external anchor: the head (``seq``, ``hash``) is exported as a metric and logged at shutdown.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
GENESIS = "0" * 64


def _canonical(record: dict[str, Any]) -> bytes:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def record_hash(record: dict[str, Any]) -> str:
    return hashlib.sha256(_canonical({k: v for k, v in record.items() if k != "hash"})).hexdigest()


def rotated_files(path: str | Path) -> list[Path]:
    """The rotated files of ``path`` (``path.1``, ``path.2``, …) oldest first, then ``path`` itself if present."""
    p = Path(path)
    olds = sorted((q for q in p.parent.glob(p.name + ".*") if q.suffix[1:].isdigit()), key=lambda q: int(q.suffix[1:]))
    return olds + ([p] if p.exists() else [])


def _last_line(p: Path) -> tuple[bytes, int]:
    """(last complete line, bytes after it that do not end in a newline) of a file."""
    with open(p, "rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - (1 << 20)))
        tail = f.read()
    torn = len(tail) - (tail.rfind(b"\n") + 1)
    lines = tail[: len(tail) - torn].splitlines()
    return (lines[-1] if lines else b""), torn


@dataclass(slots=True)
class _Rotate:
    pass


@dataclass(slots=True)
class AuditLog:
    """The synchronous core: ``seal`` chains a record (in call order), ``write`` + ``sync`` put it on disk."""

    path: Path
    max_bytes: int | None = None
    max_age_s: float | None = None
    clock: Callable[[], float] = time.time
    seq: int = 0
    head: str = GENESIS
    _size: int = 0
    _opened_at: float = 0.0
    _fd: int = -1
    _recovered: int = 0

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        files = rotated_files(self.path)
        for p in reversed(files):
            last, torn = _last_line(p)
            if torn and p == self.path:
                with open(p, "r+b") as f:
                    f.truncate(p.stat().st_size - torn)
                self._recovered = torn
                log.warning("audit log %s: cut %d bytes of a torn last record", p, torn)
            if last:
                rec = json.loads(last)
                self.seq, self.head = int(rec["seq"]), str(rec["hash"])
                break
        self._open()
        if self._recovered:
            self.write([self.seal({"event": "recovered", "truncated_bytes": self._recovered})])
            self.sync()

    def _open(self) -> None:
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._size = os.fstat(self._fd).st_size
        self._opened_at = self.clock()

    def _due(self) -> bool:
        return self._size > 0 and (
            (self.max_bytes is not None and self._size >= self.max_bytes)
            or (self.max_age_s is not None and self.clock() - self._opened_at >= self.max_age_s))

    def seal(self, fields: dict[str, Any]) -> bytes | list[Any]:
        """Chain ``fields`` into the next record; returns its line (or [rotate, line, line] when rotation is due).
        Call from one thread, in the order records should appear."""
        ops: list[Any] = []
        if self._due():
            ops.append(_Rotate())
            self._size, self._opened_at = 0, self.clock()
            ops.append(self._line({"event": "rotated"}))
        ops.append(self._line(fields))
        return ops[0] if len(ops) == 1 else ops

    def _line(self, fields: dict[str, Any]) -> bytes:
        self.seq += 1
        rec = {**fields, "seq": self.seq, "ts": round(self.clock(), 6), "prev": self.head}
        rec["hash"] = self.head = record_hash(rec)
        line = _canonical(rec) + b"\n"
        self._size += len(line)
        return line

    def write(self, items: Iterable[bytes | list[Any]]) -> None:
        """Write sealed lines (and rotate where sealed so); not durable until ``sync``."""
        buf: list[bytes] = []
        for item in items:
            for op in item if isinstance(item, list) else (item,):
                if isinstance(op, _Rotate):
                    self._flush(buf)
                    buf = []
                    self._rotate()
                else:
                    buf.append(op)
        self._flush(buf)

    def _flush(self, buf: list[bytes]) -> None:
        data = b"".join(buf)
        while data:
            n = os.write(self._fd, data)
            data = data[n:]

    def _rotate(self) -> None:
        os.fsync(self._fd)
        os.close(self._fd)
        olds = rotated_files(self.path)[:-1]
        n = int(olds[-1].suffix[1:]) + 1 if olds else 1
        os.replace(self.path, self.path.with_name(f"{self.path.name}.{n}"))
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._opened_at = self.clock()

    def sync(self) -> None:
        os.fsync(self._fd)

    def append(self, fields: dict[str, Any], fsync: bool = True) -> None:
        """Seal, write and (by default) fsync one record, synchronously."""
        self.write([self.seal(fields)])
        if fsync:
            self.sync()

    def close(self) -> None:
        if self._fd >= 0:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1
            log.info("audit log closed at seq %d head %s", self.seq, self.head)


@dataclass(slots=True)
class VerifyReport:
    records: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    head: str = GENESIS
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


def verify(files: Sequence[str | Path], max_errors: int = 20) -> VerifyReport:
    """Check the chain through ``files`` (oldest first): every hash, every ``prev`` link, consecutive ``seq``."""
    rep = VerifyReport()
    prev_hash: str | None = None
    prev_seq: int | None = None
    for f in files:
        with open(f, "rb") as fh:
            for lineno, raw in enumerate(fh, 1):
                where = f"{f}:{lineno}"
                if len(rep.errors) >= max_errors:
                    rep.errors.append("too many errors; stopped")
                    return rep
                if not raw.endswith(b"\n"):
                    rep.errors.append(f"{where}: torn last record (no newline)")
                    continue
                try:
                    rec = json.loads(raw)
                    seq, h, prev = int(rec["seq"]), str(rec["hash"]), str(rec["prev"])
                except (ValueError, KeyError, TypeError):
                    rep.errors.append(f"{where}: not an audit record")
                    continue
                rep.records += 1
                if record_hash(rec) != h:
                    rep.errors.append(f"{where}: seq {seq}: hash mismatch (record edited)")
                if prev_seq is None:
                    rep.first_seq = seq
                    if seq == 1 and prev != GENESIS:
                        rep.errors.append(f"{where}: seq 1 does not start from the genesis hash")
                    elif seq != 1 and rec.get("event") != "rotated":
                        rep.errors.append(f"{where}: starts at seq {seq}, neither the chain's start nor a rotated "
                                          "file's first record (records dropped at the start)")
                    elif seq != 1:
                        rep.notes.append(f"chain starts at seq {seq} (a rotated file; earlier files not given)")
                else:
                    if seq != prev_seq + 1:
                        rep.errors.append(f"{where}: seq {seq} follows seq {prev_seq} (records dropped or reordered)")
                    if prev != prev_hash:
                        rep.errors.append(f"{where}: seq {seq}: prev does not match the hash of the record before")
                prev_seq, prev_hash = seq, h
    rep.last_seq, rep.head = prev_seq, prev_hash or GENESIS
    return rep
