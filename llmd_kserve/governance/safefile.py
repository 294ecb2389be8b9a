"""A small file that several processes rewrite: an exclusive sidecar lock, and an atomic owner-keeping replace.

Writers take ``locked(path)`` around read-modify-write, so concurrent edits never lose each other's changes.
``replace_file`` writes a temp file, fsyncs it and renames it over the old one, with the old file's owner, group
and mode (a process that could read the file still can); readers never see half a file and need no lock.
A symlinked path is followed: the link stays, its target is replaced.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

from llmd_kserve.errors import ConfigError

LOCK_TIMEOUT_S = 10.0


def real_path(path: str | Path) -> Path:
    """The file itself when ``path`` is a symlink."""
    return Path(os.path.realpath(path))


def _keep_owner(fd: int, old: os.stat_result, p: Path) -> None:
    """Give the new file (``fd``) the owner, group and mode of the one it replaces, or refuse."""
    mine = os.fstat(fd)
    uid = old.st_uid if old.st_uid != mine.st_uid else -1
    gid = old.st_gid if old.st_gid != mine.st_gid else -1
    if uid != -1 or gid != -1:
        try:
            os.fchown(fd, uid, gid)
        except PermissionError:
            raise ConfigError(f"cannot keep the file's owner (uid {old.st_uid}, gid {old.st_gid}) when rewriting it; "
                              "run this as that user or as root", str(p)) from None
    os.fchmod(fd, stat.S_IMODE(old.st_mode))


def replace_file(path: str | Path, text: str) -> None:
    """Atomically replace ``path`` with ``text`` (UTF-8), keeping owner, group and mode; a new file is 0600."""
    p = real_path(path)
    try:
        old: os.stat_result | None = os.stat(p)
    except FileNotFoundError:
        old = None
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            if old is not None:
                _keep_owner(f.fileno(), old, p)
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(p.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the rename itself survives a crash
    finally:
        os.close(dir_fd)


def _open_lock(lock: Path, p: Path) -> int:
    try:
        return os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    except PermissionError:
        try:
            return os.open(lock, os.O_RDONLY | os.O_NOFOLLOW)  # flock works on a read-only descriptor too
        except OSError as exc:
            raise ConfigError(f"cannot open the lock file {lock.name}: {exc.strerror or exc}", str(p)) from None


@contextlib.contextmanager
def locked(path: str | Path, timeout_s: float = LOCK_TIMEOUT_S) -> Iterator[Path]:
    """Hold an exclusive ``flock`` on the sidecar ``.<name>.lock`` (yields the file's real path); ConfigError after
    ``timeout_s`` s of waiting for another writer."""
    p = real_path(path)
    lock = p.with_name(f".{p.name}.lock")
    fd = _open_lock(lock, p)
    try:
        with contextlib.suppress(OSError):  # the lock gets the file's owner, so the file's other writers can open it
            st = os.stat(p)
            if os.fstat(fd).st_uid != st.st_uid:
                os.fchown(fd, st.st_uid, st.st_gid)
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise ConfigError(f"another writer has held {lock.name} for {timeout_s:g} s; try again",
                                      str(p)) from None
                time.sleep(0.02)
        yield p
    finally:
        os.close(fd)  # releases the lock
