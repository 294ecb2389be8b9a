"""Running the asyncio edge: one event loop (uvloop when installed), a stop event set by SIGINT/SIGTERM (a second
signal exits at once), the process's open-file limit raised to what it may be, and a server's GC thresholds."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import sys
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)
LOW_FD_LIMIT = 4096
"""Below this many open files, say so: every proxied stream holds two sockets."""

SERVER_GC_THRESHOLDS = (20_000, 20, 20)
"""``gc.set_threshold`` for a server process (CPython's default: 700, 10, 10)."""


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` to completion on a fresh loop: uvloop's when it is installed, else asyncio's."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a base dependency off Windows
        return asyncio.run(main)
    return uvloop.run(main)


def stop_on_signals() -> asyncio.Event:
    """An event the running loop sets on SIGINT or SIGTERM (where the platform lets it install handlers); a second
    signal while stopping exits the process at once (exit status 1)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def force() -> None:
        print("second signal: exiting now", file=sys.stderr, flush=True)
        os._exit(1)

    def first() -> None:
        stop.set()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, force)

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, first)
    return stop


async def cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
    """Cancel ``task`` (None: nothing to do) and wait until it has ended; its cancellation or error is swallowed."""
    if task is not None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def raise_fd_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit (a server needs 2 fds per proxied stream); warn when it stays
    low. Returns the soft limit now in force (-1 where the platform has no such limit)."""
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return -1
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-file limit from %d to %d: %s", soft, target, exc)
    if soft != resource.RLIM_INFINITY and soft < LOW_FD_LIMIT:
        log.warning("open-file limit is %d (hard limit %s): about %d concurrent streams at most; raise it with "
                    "ulimit -Hn / LimitNOFILE", soft, hard, soft // 2)
    return soft


def relax_gc(thresholds: tuple[int, int, int] = SERVER_GC_THRESHOLDS) -> None:
    """Collect cyclic garbage less often. A request's objects live a few milliseconds and die by reference count;
    at CPython's default threshold (700 allocations) the collector runs every few requests and traverses all the
    in-flight ones, ~10% of a router's CPU under many small requests. Each young collection is then bigger (a
    fraction of a millisecond), and there are far fewer of them."""
    gc.set_threshold(*thresholds)


class Deadline:
    """``asyncio.timeout`` for a caller that knows its loop: the same cancellation and ``TimeoutError``, without
    ``get_running_loop()`` (on CPython 3.11 each is a ``getpid()`` syscall; ``asyncio.timeout`` makes three)."""

    __slots__ = ("loop", "delay", "task", "handle", "expired", "done", "_cancelling")

    def __init__(self, loop: asyncio.AbstractEventLoop, delay: float) -> None:
        self.loop, self.delay = loop, delay
        self.task: asyncio.Task[Any] | None = None
        self.handle: asyncio.TimerHandle | None = None
        self.expired = self.done = False
        self._cancelling = 0

    async def __aenter__(self) -> Deadline:
        task = self.task = asyncio.current_task(self.loop)
        assert task is not None
        self._cancelling = task.cancelling()
        self.handle = self.loop.call_later(self.delay, self.expire)
        return self

    def expire(self) -> None:
        """End the wait now (the task is cancelled, the block raises ``TimeoutError``); nothing once it is over."""
        if self.done or self.expired or self.task is None:
            return
        if self.handle is not None:
            self.handle.cancel()
        self.expired = True
        self.task.cancel()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: object) -> None:
        self.done = True
        if self.handle is not None:
            self.handle.cancel()
        if self.expired and self.task is not None and self.task.uncancel() <= self._cancelling \
                and exc_type is asyncio.CancelledError:
            raise TimeoutError from exc
