"""The router's lean HTTP/1.1 server: the two OpenAI routes on a plain asyncio protocol, everything else on aiohttp.

A connection starts on :class:`LeanProtocol`, which serves a plain HTTP/1.1 ``POST /v1/completions`` or
``/v1/chat/completions`` with a ``Content-Length`` body (no ``Expect``, ``Transfer-Encoding`` or ``Upgrade``, no
API keys configured) through the same ``OpenAIRoutes.serve`` as aiohttp, without aiohttp's request and response
objects. At the first request it does not take, it hands the connection, from that request's first byte, to
aiohttp's protocol handler for good. Keep-alive and pipelined requests are answered in order; headers within
``header_timeout`` (also the idle limit), the body within ``body_timeout`` (408); a client gone cancels its request.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable, Coroutine, Mapping
from email.utils import formatdate
from http import HTTPStatus
from typing import Any, cast

import msgspec
from multidict import CIMultiDict

from llmd_kserve.control.requests import Kind
from llmd_kserve.errors import HTTPError
from llmd_kserve.router.answer import Answer

log = logging.getLogger(__name__)
_encode = msgspec.json.Encoder().encode
MAX_HEAD = 8190
"""Bytes of request line and headers the lean protocol parses; longer heads go to aiohttp (which answers them)."""
PIPELINE_LIMIT = 1 << 20
"""Bytes of pipelined requests buffered while one is served before the connection's reading pauses."""
_ROUTES: dict[bytes, tuple[Kind, str]] = {b"POST /v1/completions HTTP/1.1": ("completion", "/v1/completions"),
                                          b"POST /v1/chat/completions HTTP/1.1": ("chat", "/v1/chat/completions")}
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_VALUE = r"[^\x00-\x08\x0a-\x1f\x7f]*"  # field content: no control characters but HTAB
_HEADERS = re.compile(rf"(?:{_TOKEN}:{_VALUE}\r\n)*")
_FIELD = re.compile(r"([^:]*):[ \t]*((?:[^\r]*[^ \t\r])?)[ \t]*\r\n")
"""One header line of a head ``_HEADERS`` matched whole (a name without colons, a value without CR): its name and
its value without the white space around it; a third of the work of matching the field grammar again."""
_HANDED_OFF = ("transfer-encoding", "expect", "upgrade")
_REASONS = {s.value: s.phrase for s in HTTPStatus}

Serve = Callable[[Answer, Kind, str], Coroutine[Any, Any, None]]


_date_cache = [0, ""]


def _date() -> str:
    """The ``Date`` header's value, formatted at most once a second."""
    now = int(time.time())
    if now != _date_cache[0]:
        _date_cache[:] = now, formatdate(now, usegmt=True)
    return _date_cache[1]  # type: ignore[return-value]


def response_head(status: int, headers: Mapping[str, str], length: int | None, close: bool) -> bytes:
    """An HTTP/1.1 response head; ``length`` None: a chunked body."""
    fields = "".join([f"{k}: {v}\r\n" for k, v in headers.items()])
    if fields.count("\n") != len(headers) or fields.count("\r") != len(headers):  # one CRLF a field, no more
        raise ValueError("a response header holds a line break")
    framing = f"Content-Length: {length}\r\n" if length is not None else "Transfer-Encoding: chunked\r\n"
    return (f"HTTP/1.1 {status} {_REASONS.get(status, '')}\r\n{fields}{framing}Date: {_date()}\r\n"
            + ("Connection: close\r\n\r\n" if close else "\r\n")).encode("latin-1")


def parse_head(head: bytes) -> tuple[Kind, str, CIMultiDict[str], int, bool] | None:
    """(kind, path, headers, body length, close after) of a request the lean protocol takes, else None."""
    line_end = head.find(b"\r\n")
    route = _ROUTES.get(head[:line_end] if line_end >= 0 else head)
    if route is None:
        return None
    text = head[line_end + 2:].decode("utf-8", "surrogateescape") + "\r\n" if line_end >= 0 else ""
    if _HEADERS.fullmatch(text) is None:
        return None
    headers: CIMultiDict[str] = CIMultiDict(_FIELD.findall(text))
    lengths = headers.getall("Content-Length", ())
    if len(lengths) != 1 or not (lengths[0].isascii() and lengths[0].isdigit()):
        return None
    for name in _HANDED_OFF:
        if name in headers:
            return None
    connection = headers.get("Connection", "").lower()
    if connection not in ("", "keep-alive", "close"):
        return None
    return route[0], route[1], headers, int(lengths[0]), connection == "close"


class LeanServer:
    """The protocol factory (``loop.create_server(lean_server, ...)``) and its connections, for the shutdown."""

    def __init__(self, serve: Serve, aiohttp_server: Callable[[], asyncio.Protocol], *, keys_configured:
                 Callable[[], bool], header_timeout: float, body_timeout: float, max_body_bytes: int) -> None:
        self.serve, self.aiohttp_server, self.keys_configured = serve, aiohttp_server, keys_configured
        self.header_timeout, self.body_timeout, self.max_body_bytes = header_timeout, body_timeout, max_body_bytes
        self.connections: set[LeanProtocol] = set()
        self.closing = False

    def __call__(self) -> LeanProtocol:
        return LeanProtocol(self)

    async def shutdown(self, timeout: float) -> None:
        """Close idle connections now, give requests in flight up to ``timeout`` s, then close the rest."""
        self.closing = True
        for conn in list(self.connections):
            if conn.task is None:
                conn.close()
        tasks = [c.task for c in self.connections if c.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)
        for conn in list(self.connections):
            conn.close()


class LeanProtocol(asyncio.Protocol):
    """One client connection (see the module's docstring)."""

    def __init__(self, server: LeanServer) -> None:
        self.server = server
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.client: str | None = None
        self.buf: bytes | bytearray = b""
        """Bytes received and not yet consumed: the request being served (head and body) and those after it."""
        self.task: asyncio.Task[None] | None = None
        self.answer: LeanAnswer | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not its subclasses
        peer = transport.get_extra_info("peername")
        self.client = peer[0] if isinstance(peer, tuple) else None
        self.server.connections.add(self)
        self.timer = self.loop.call_later(self.server.header_timeout, self.close)

    def connection_lost(self, exc: BaseException | None) -> None:
        self.server.connections.discard(self)
        if self.timer is not None:
            self.timer.cancel()
        if self.task is not None:
            self.task.cancel()  # the client went away: its request is cancelled (upstream closed, ticket settled)
        if self.answer is not None and self.answer.body_waiter is not None:
            self.answer.body_waiter.cancel()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        if not buf:
            self.buf = data  # the common case: a request comes whole in one read, taken as it is
        else:
            if isinstance(buf, bytes):  # a body in several reads: one buffer that grows in place
                buf = self.buf = bytearray(buf)
            buf += data
        answer = self.answer
        if answer is None:
            self._next()
        elif not answer.body_read:  # the body of the request being served is still coming
            answer.more_body()
        elif len(self.buf) - answer.body_end > PIPELINE_LIMIT and not self.paused:
            self.paused = True
            self.transport.pause_reading()  # type: ignore[union-attr]

    def _next(self) -> None:
        """Start the next request in ``buf``, if its head is whole (or hand the connection off)."""
        buf = self.buf
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > MAX_HEAD:
                self._hand_off()
            return
        head = parse_head(bytes(buf[:end])) if end <= MAX_HEAD and not self.server.keys_configured() else None
        if head is None:
            self._hand_off()
            return
        kind, path, headers, length, close = head
        if length > self.server.max_body_bytes:  # aiohttp answers 413 as before (reading what it may first)
            self._hand_off()
            return
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        answer = self.answer = LeanAnswer(self, path, headers, end + 4, length, close)
        self.task = self.loop.create_task(self.server.serve(answer, kind, path))
        self.task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        answer, self.task, self.answer = self.answer, None, None
        transport = self.transport
        assert answer is not None and transport is not None
        if not task.cancelled() and task.exception() is not None:
            log.error("unhandled error on %s", answer.path, exc_info=task.exception())
            answer.close = True
            if not answer.sent:
                answer.error(HTTPError("Internal server error"), "")
        if answer.out is not None and not transport.is_closing():
            transport.write(answer.out)
        if (answer.close or not answer.sent or not answer.body_read or self.server.closing
                or transport.is_closing()):
            transport.close()
            return
        self.buf = self.buf[answer.body_end:] or b""
        if self.paused:
            self.paused = False
            transport.resume_reading()
        self.timer = self.loop.call_later(self.server.header_timeout, self.close)
        if self.buf:
            self._next()

    def _hand_off(self) -> None:
        """aiohttp's protocol handler takes the connection over, from the first byte of the request in ``buf``."""
        transport = self.transport
        assert transport is not None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.server.connections.discard(self)
        handler = self.server.aiohttp_server()
        transport.set_protocol(handler)
        handler.connection_made(transport)
        buf, self.buf = self.buf, b""
        if buf:
            handler.data_received(bytes(buf))


class LeanAnswer(Answer):
    """An :class:`Answer` written straight to the connection's transport."""

    __slots__ = ("conn", "path", "body_start", "body_end", "close", "sent", "body_read", "body_waiter", "out")

    def __init__(self, conn: LeanProtocol, path: str, headers: CIMultiDict[str], body_start: int, length: int,
                 close: bool) -> None:
        super().__init__(headers, conn.client)
        self.conn, self.path, self.close = conn, path, close
        self.body_start, self.body_end = body_start, body_start + length
        self.sent = self.body_read = False
        self.body_waiter: asyncio.Future[None] | None = None
        self.out: bytes | None = None
        """A whole answer, written when the request's handling is over."""

    async def body(self, timeout: float, max_bytes: int) -> bytes:
        size = self.body_end - self.body_start
        if size > max_bytes:
            self.close = True  # the body is not read: the connection cannot carry another request
            raise HTTPError(f"Maximum request body size {max_bytes} exceeded, actual body size {size}",
                            status=413, type_="RequestTooLargeError")
        if len(self.conn.buf) < self.body_end:
            self.body_waiter = self.conn.loop.create_future()
            try:
                async with asyncio.timeout(timeout):
                    await self.body_waiter
            except TimeoutError:
                self.close = True
                raise HTTPError(f"Request body not received within {timeout:g} s.", status=408,
                                type_="RequestTimeoutError") from None
            finally:
                self.body_waiter = None
        self.body_read = True
        body = self.conn.buf[self.body_start:self.body_end]
        return body if isinstance(body, bytes) else bytes(body)

    def more_body(self) -> None:
        """More bytes came while the body is awaited."""
        waiter = self.body_waiter
        if waiter is not None and not waiter.done() and len(self.conn.buf) >= self.body_end:
            waiter.set_result(None)

    def _write(self, data: bytes) -> None:
        transport = self.conn.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("the client went away")
        transport.write(data)

    def whole(self, status: int, headers: Mapping[str, str], body: bytes) -> None:
        """Kept until the request's handling ends (its audit record is written before the answer goes out)."""
        self.status, self.sent = status, True
        self.out = response_head(status, headers, len(body), self.close) + body

    def error(self, exc: HTTPError, request_id: str) -> None:
        headers = {"Content-Type": "application/json", **(getattr(exc, "headers", None) or {})}
        if request_id:
            headers["x-request-id"] = request_id
        if exc.status == 408:
            self.close = True
        self.whole(exc.status, headers, _encode(exc.body()))

    async def start_stream(self, status: int, headers: Mapping[str, str]) -> asyncio.Transport:
        self.status, self.sent = status, True
        self._write(response_head(status, headers, None, self.close))
        transport = self.conn.transport
        assert transport is not None
        return transport

    async def write(self, data: bytes) -> None:
        self._write(b"%x\r\n%b\r\n" % (len(data), data))

    async def end(self) -> None:
        self._write(b"0\r\n\r\n")
