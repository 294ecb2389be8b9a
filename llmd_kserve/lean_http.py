"""A lean HTTP/1.1 client: each body chunk reaches a callback as it arrives, no task per chunk.

aiohttp's client wakes a task and runs its stream reader for every SSE event, which for a token stream was most of
the router's CPU. Here llhttp (``httptools``, uvicorn's parser) parses the response in ``data_received`` and every
body chunk goes straight to ``Exchange.sink`` (a chunk split over reads is put together first). The router sends
every request to an engine and every metrics scrape through it; its aiohttp session serves the P/D prefill hop and
model lists.
"""

from __future__ import annotations

import asyncio
import re
import socket
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple, cast
from urllib.parse import urlsplit

import httptools

MAX_HEAD = 64 * 1024
_bad_value = re.compile("[\r\n\0]").search
_bad_name = re.compile("[\r\n\0: ]").search


class UpstreamBroken(ConnectionError):
    """The connection closed or sent something that is not HTTP/1.1 before the answer was complete."""

    def __init__(self, reason: str, *, before_answer: bool = False) -> None:
        super().__init__(reason)
        self.before_answer = before_answer


@dataclass(frozen=True, slots=True)
class Head:
    status: int
    headers: Mapping[str, str]
    """Lower-case names; a repeated header keeps its last value."""

    def get(self, name: str, default: str = "") -> str:
        return self.headers.get(name, default)


class Address(NamedTuple):
    tls: bool
    host: str
    port: int
    prefix: str
    """The endpoint URL's path (no trailing slash), put before every request path."""


@lru_cache(maxsize=1024)
def address(target: str) -> Address | None:
    """Where an ``http://`` or ``https://`` endpoint URL points, or None (not a URL this client speaks)."""
    u = urlsplit(target)
    if u.scheme not in ("http", "https") or not u.hostname or u.query or u.fragment or u.username:
        return None
    try:
        port = u.port or (443 if u.scheme == "https" else 80)
    except ValueError:  # a port out of range
        return None
    return Address(u.scheme == "https", u.hostname, port, u.path.rstrip("/"))


def _until_close(head: Head) -> bool:
    """The body ends when the connection does (no length, not chunked)."""
    return ("content-length" not in head.headers and "chunked" not in head.get("transfer-encoding").lower()
            and head.status not in (204, 304))


class Exchange:
    """One request and its answer on a connection: ``head`` (a future), then body chunks to ``sink``, then ``done``."""

    def __init__(self, conn: Connection, loop: asyncio.AbstractEventLoop) -> None:
        self.conn = conn
        self.head: asyncio.Future[Head] = loop.create_future()
        self.first: asyncio.Future[None] = loop.create_future()
        """Set when the first body byte arrived, or the body ended empty."""
        self.done: asyncio.Future[None] = loop.create_future()
        self.sink: Callable[[bytes], None] | None = None
        self.pending: list[bytes] = []
        self.last_data = loop.time()
        self.got_bytes = False

    def attach(self, sink: Callable[[bytes], None]) -> None:
        """Send every body chunk to ``sink`` from now on (the ones that came before first)."""
        pending, self.pending = self.pending, []
        self.sink = sink
        for piece in pending:
            sink(piece)

    def emit(self, piece: bytes) -> None:
        if not self.first.done():
            self.first.set_result(None)
        if self.sink is None:
            self.pending.append(piece)
        else:
            self.sink(piece)

    async def wait(self, idle: float, paused: Callable[[], bool] = lambda: False) -> None:
        """Until the answer's end; ``TimeoutError`` after ``idle`` s without a byte from upstream (not while
        ``paused()``: the reading was paused for a slow client), ``UpstreamBroken`` when the connection broke."""
        loop = self.conn.loop  # not asyncio.get_running_loop(): on CPython 3.11 that is a getpid() syscall
        done = self.done
        while not done.done():
            left = self.last_data + idle - loop.time()
            if left <= 0 and not paused():
                raise TimeoutError
            await asyncio.wait((done,), timeout=max(left, 0.05))
        done.result()

    async def read_all(self, idle: float) -> bytes:
        """The whole body (an answer that is not streamed to the client); ``wait``'s errors."""
        await self.wait(idle)
        pending, self.pending = self.pending, []
        return b"".join(pending)

    def release(self) -> None:
        """Back to the pool when the answer was read to its end on a keep-alive connection; closed otherwise."""
        self.conn.finish_use(self)

    def close(self) -> None:
        """Drop the connection now: the engine sees the disconnect and aborts the request."""
        self.conn.abort()

    def pause_reading(self) -> None:
        if not self.conn.closed:
            self.conn.transport.pause_reading()

    def resume_reading(self) -> None:
        if not self.conn.closed:
            self.conn.transport.resume_reading()


class Connection(asyncio.Protocol):
    """One keep-alive TCP connection to an engine; one answer at a time, parsed by llhttp (``httptools``)."""

    transport: asyncio.Transport

    def __init__(self, pool: StreamClient, key: Address) -> None:
        self.pool, self.key = pool, key
        self.loop = asyncio.get_running_loop()
        self.exchange: Exchange | None = None
        self.closed = False
        self.reused = False
        self.idle_since = 0.0
        self.keep_alive = False
        self.parser = httptools.HttpResponseParser(self)
        self._headers: dict[str, str] = {}
        self._head_bytes = 0  # bytes of the response head so far (bounded by MAX_HEAD)
        self._interim = False  # a 1xx answer is being parsed: the real one follows
        self._chunked = False
        self._parts: list[bytes] = []  # the current chunk's pieces, when it came in several reads

    # --- asyncio.Protocol ---------------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        ex = self.exchange
        if ex is None:  # an idle one the engine closed (keep-alive timeout, restart): out of the pool
            self.pool.forget(self)
            return
        head = ex.head
        if head.done() and not head.cancelled() and head.exception() is None and _until_close(head.result()):  # the end is the body's end
            self._finish()
        else:
            self._fail(UpstreamBroken("upstream connection lost", before_answer=not ex.got_bytes))

    def data_received(self, data: bytes) -> None:
        ex = self.exchange
        if ex is None:  # bytes nobody asked for: the connection is not HTTP we can trust any more
            self.abort()
            return
        ex.last_data = self.loop.time()
        ex.got_bytes = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self._fail(UpstreamBroken("upstream sent a response that is not valid HTTP/1.1"))
            return
        if self.exchange is ex and not ex.head.done():
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD:
                self._fail(UpstreamBroken("upstream response head too large"))

    # --- llhttp callbacks ---------------------------------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        headers, self._headers = self._headers, {}
        self._interim = 100 <= status < 200  # 100 Continue, 103 Early Hints: skipped
        ex = self.exchange
        if self._interim or ex is None:
            return
        self._chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        ex.head.set_result(Head(status, headers))

    def on_body(self, body: bytes) -> None:
        ex = self.exchange
        if ex is None:
            return
        if self._chunked:
            self._parts.append(body)  # emitted whole at the chunk's end
        else:
            ex.emit(body)

    def on_chunk_complete(self) -> None:
        parts, ex = self._parts, self.exchange
        if parts and ex is not None:
            self._parts = []
            ex.emit(parts[0] if len(parts) == 1 else b"".join(parts))

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        if self.exchange is not None:
            self.keep_alive = self.parser.should_keep_alive()
            self._finish()

    # --- one exchange -------------------------------------------------------------------------------------------
    def start(self, request: bytes) -> Exchange:
        ex = self.exchange = Exchange(self, self.loop)
        self._head_bytes, self._interim, self._parts = 0, False, []
        self.keep_alive = False
        self.transport.write(request)
        return ex

    def _finish(self) -> None:
        ex, self.exchange = self.exchange, None
        assert ex is not None
        if not ex.first.done():
            ex.first.set_result(None)
        if not ex.done.done():
            ex.done.set_result(None)

    def _fail(self, exc: UpstreamBroken) -> None:
        ex, self.exchange = self.exchange, None
        self.keep_alive = False
        if not self.closed:
            self.transport.abort()
            self.closed = True
        if ex is not None:
            for fut in (ex.head, ex.first, ex.done):
                if not fut.done():
                    fut.set_exception(exc)
                    fut.exception()  # retrieved: nobody may await it (the head failed, so the body is never read)

    def finish_use(self, ex: Exchange) -> None:
        if (self.exchange is ex or not self.keep_alive or self.closed or not ex.done.done() or ex.done.cancelled()
                or ex.done.exception() is not None):
            self.abort()
        else:
            self.pool.put_back(self)

    def abort(self) -> None:
        if self.exchange is not None:
            self._fail(UpstreamBroken("closed by the router"))
        elif not self.closed:
            self.transport.abort()
            self.closed = True


class StreamClient:
    """Keep-alive connections per engine (at most ``max_idle`` idle ones each, dropped after ``idle_expiry`` s:
    under uvicorn's 5 s keep-alive, so a pooled connection is rarely one the engine is closing)."""

    def __init__(self, *, connect_timeout: float = 5.0, max_idle: int = 64, idle_expiry: float = 4.0,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.connect_timeout, self.max_idle, self.idle_expiry = connect_timeout, max_idle, idle_expiry
        self._ssl = ssl_context
        """For ``https://`` endpoints; None: the system's default (made on first use)."""
        self._idle: dict[Address, list[Connection]] = {}

    async def request(self, target: str, path: str, body: bytes, headers: Mapping[str, str], *,
                      method: str = "POST") -> Exchange:
        """``method`` ``target + path`` with ``body``; returns once the response head arrived. A pooled connection
        that closes before answering is retried once on a new one. Raises ``OSError`` (connect), ``UpstreamBroken``."""
        where = address(target)
        if where is None:
            raise ValueError(f"not an http(s)://host:port endpoint: {target}")
        request = _request_bytes(method, f"{where.prefix}{path}", where.host, where.port, body, headers)
        conn = self._pooled(where)
        while True:
            if conn is None:
                conn = await self._connect(where)
            ex = conn.start(request)
            try:
                await ex.head
                return ex
            except UpstreamBroken as exc:
                if not (conn.reused and exc.before_answer):
                    raise
                conn = None  # the engine had closed that idle connection: once more on a fresh one
            except BaseException:
                conn.abort()
                raise

    def _pooled(self, key: Address) -> Connection | None:
        idle = self._idle.get(key)
        while idle:
            conn = idle.pop()
            if not conn.closed and conn.loop.time() - conn.idle_since < self.idle_expiry:
                conn.reused = True
                return conn
            conn.abort()
        return None

    async def _connect(self, key: Address) -> Connection:
        loop = asyncio.get_running_loop()
        tls = None
        if key.tls:
            if self._ssl is None:
                self._ssl = ssl.create_default_context()  # the system's CAs, hostname checked
            tls = self._ssl
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, conn = await loop.create_connection(lambda: Connection(self, key), key.host, key.port, ssl=tls,
                                                       server_hostname=key.host if tls else None)
        except TimeoutError:
            raise OSError(f"connecting to {key.host}:{key.port} timed out") from None
        return conn

    def put_back(self, conn: Connection) -> None:
        idle = self._idle.setdefault(conn.key, [])
        if len(idle) >= self.max_idle:
            conn.abort()
            return
        conn.idle_since = conn.loop.time()
        idle.append(conn)

    def forget(self, conn: Connection) -> None:
        idle = self._idle.get(conn.key)
        if idle is not None and conn in idle:
            idle.remove(conn)
            if not idle:
                del self._idle[conn.key]

    def close(self) -> None:
        for idle in self._idle.values():
            for conn in idle:
                conn.abort()
        self._idle.clear()


def _request_bytes(method: str, path: str, host: str, port: int, body: bytes, headers: Mapping[str, str]) -> bytes:
    host_header = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host_header}"]
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    for name, value in headers.items():
        if _bad_value(value) or _bad_name(name):
            raise ValueError(f"header {name!r} has a line break or NUL in it")
        lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape") + body
