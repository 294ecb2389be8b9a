"""The audit chain's record format and its check: canonical JSON, hashes (SHA-256, or HMAC-SHA256 under a chain
key), the chain key's source, and ``verify`` over a set of files."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

GENESIS = "0" * 64
KEYED = "hmac-sha256"
"""The ``chain`` field of a record hashed with the chain key."""
MIN_KEY_BYTES = 16


def canonical(record: dict[str, Any]) -> bytes:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def record_hash(record: dict[str, Any], key: bytes | None = None) -> str:
    """SHA-256 of the canonical record without ``hash``; HMAC-SHA256 under ``key`` when one is given."""
    data = canonical({k: v for k, v in record.items() if k != "hash"})
    return hmac.new(key, data, hashlib.sha256).hexdigest() if key is not None else hashlib.sha256(data).hexdigest()


def chain_key(key_file: str | Path | None, env: Mapping[str, str]) -> bytes | None:
    """The chain key from ``key_file`` (its bytes, trailing whitespace stripped), else ``LLMD_AUDIT_CHAIN_KEY`` in
    ``env``; None when neither is set. Raises ValueError for a key shorter than 16 bytes, OSError for a bad file."""
    if key_file:
        key, where = Path(key_file).read_bytes().rstrip(), str(key_file)
    elif env.get("LLMD_AUDIT_CHAIN_KEY"):
        key, where = env["LLMD_AUDIT_CHAIN_KEY"].strip().encode(), "LLMD_AUDIT_CHAIN_KEY"
    else:
        return None
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(f"{where}: the audit chain key must be at least {MIN_KEY_BYTES} bytes, got {len(key)}")
    return key


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


def verify(files: Sequence[str | Path], key: bytes | None = None, partial: bool = False,
           expect_head: str | None = None, max_errors: int = 20) -> VerifyReport:
    """Check the chain through ``files`` (oldest first): every hash (keyed records with ``key``), every ``prev``
    link, consecutive ``seq``, a start at seq 1 (unless ``partial``), and that a head kept elsewhere
    (``expect_head``, the hash of some record) is still there. With ``key``, the chain must be keyed: records before
    the first keyed one are accepted (a log from before the key), none after it."""
    rep = VerifyReport()
    head_seq: int | None = None
    prev_hash: str | None = None
    prev_seq: int | None = None
    keyed_seen, keyed_unchecked = False, 0
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
                if rec.get("chain") == KEYED:
                    keyed_seen = True
                    if key is None:
                        keyed_unchecked += 1
                    elif not hmac.compare_digest(record_hash(rec, key), h):
                        rep.errors.append(f"{where}: seq {seq}: hash mismatch (record edited, or another chain key)")
                elif "chain" in rec:
                    rep.errors.append(f"{where}: seq {seq}: unknown chain {rec['chain']!r}")
                else:
                    if record_hash(rec) != h:
                        rep.errors.append(f"{where}: seq {seq}: hash mismatch (record edited)")
                    if key is not None and keyed_seen:
                        rep.errors.append(f"{where}: seq {seq}: not keyed, after keyed records (re-hashed without "
                                          "the chain key)")
                _check_link(rep, where, rec, seq, prev, prev_seq, prev_hash, partial)
                if expect_head is not None and h == expect_head:
                    head_seq = seq
                prev_seq, prev_hash = seq, h
    if keyed_unchecked:
        rep.errors.append(f"{keyed_unchecked} records are keyed ({KEYED}): give the chain key (--chain-key-file or "
                          "LLMD_AUDIT_CHAIN_KEY) to check them")
    if key is not None and rep.records and not keyed_seen:
        rep.errors.append("no record is keyed: these files were not written with a chain key, or were re-hashed "
                          "without it")
    rep.last_seq, rep.head = prev_seq, prev_hash or GENESIS
    if expect_head is not None and head_seq is None:
        rep.errors.append(f"the expected head {expect_head} is not in these files (records dropped at the end)")
    elif expect_head is not None and head_seq != prev_seq:
        rep.notes.append(f"the expected head is seq {head_seq}; {(prev_seq or 0) - (head_seq or 0)} records follow it")
    return rep


def _check_link(rep: VerifyReport, where: str, rec: dict[str, Any], seq: int, prev: str, prev_seq: int | None,
                prev_hash: str | None, partial: bool) -> None:
    if prev_seq is None:
        rep.first_seq = seq
        if seq == 1 and prev != GENESIS:
            rep.errors.append(f"{where}: seq 1 does not start from the genesis hash")
        elif seq != 1 and partial:
            rep.notes.append(f"chain starts at seq {seq} (partial: earlier records not checked)")
        elif seq != 1 and rec.get("event") == "rotated":
            rep.errors.append(f"{where}: chain starts at seq {seq}: the files before it are missing (give every "
                              "rotated file, oldest first, or --partial)")
        elif seq != 1:
            rep.errors.append(f"{where}: starts at seq {seq}, neither the chain's start nor a rotated file's first "
                              "record (records dropped at the start)")
    else:
        if seq != prev_seq + 1:
            rep.errors.append(f"{where}: seq {seq} follows seq {prev_seq} (records dropped or reordered)")
        if prev != prev_hash:
            rep.errors.append(f"{where}: seq {seq}: prev does not match the hash of the record before")
    if rec.get("event") == "write_failed":
        rep.notes.append(f"{where}: seq {seq}: the router could not write {rec.get('lost_records')} records "
                         f"({rec.get('error')}) between ts {rec.get('first_failure_ts')} and "
                         f"{rec.get('last_failure_ts')}; the chain around it is whole")
    elif rec.get("event") == "recovered":
        rep.notes.append(f"{where}: seq {seq}: at restart, {rec.get('truncated_bytes')} bytes of an unfinished last "
                         "record were cut")
