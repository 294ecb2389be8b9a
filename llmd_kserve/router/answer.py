"""One client's side of an OpenAI request, as the proxy sees it: the request's headers and body, and the answer it
writes (whole, or an event stream a chunk at a time). Each HTTP server implements it: aiohttp's here, the lean one
in ``lean_server``."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from aiohttp import web

from llmd_kserve.errors import HTTPError, InvalidRequestError
from llmd_kserve.http_errors import error_response


class Answer:
    """The request as received and its answer as written; ``status`` is what the metrics and settlement record."""

    __slots__ = ("headers", "chunked", "client", "answered", "status", "endpoint")

    def __init__(self, headers: Mapping[str, str], client: str | None, chunked: bool = True) -> None:
        self.headers = headers
        """The request's headers (names case-insensitive)."""
        self.client = client
        self.chunked = chunked
        """Whether a stream is sent in HTTP chunks (an HTTP/1.0 client gets the bytes as they are, then a close)."""
        self.answered: int | None = None
        """The status once the whole answer went out: a client that hangs up after the last byte was answered."""
        self.status = 499
        """The answer's status; a stream whose status line said 200 but which ended in an error event: its error's."""
        self.endpoint: str | None = None
        """The endpoint that served it (``x-llmd-endpoint``)."""

    async def body(self, timeout: float, max_bytes: int) -> bytes:
        """The request's body within ``timeout`` s (408 after), 413 over ``max_bytes``."""
        raise NotImplementedError

    def whole(self, status: int, headers: Mapping[str, str], body: bytes) -> None:
        """Answer with one body."""
        raise NotImplementedError

    def error(self, exc: HTTPError, request_id: str) -> None:
        """Answer ``exc`` as OpenAI-shaped JSON (a 408 also closes the connection: the body may still be coming)."""
        raise NotImplementedError

    async def start_stream(self, status: int, headers: Mapping[str, str]) -> asyncio.Transport:
        """Send the head of a streamed answer; the transport its chunks go to (``ConnectionResetError``: gone)."""
        raise NotImplementedError

    async def write(self, data: bytes) -> None:
        """One more piece of a started stream."""
        raise NotImplementedError

    async def end(self) -> None:
        """The end of a started stream."""
        raise NotImplementedError


def body_timeout_error(timeout: float) -> InvalidRequestError:
    return InvalidRequestError(f"Request body not received within {timeout:g} s.", status=408,
                               type_="RequestTimeoutError")


class AioAnswer(Answer):
    """An :class:`Answer` on aiohttp's server: ``response`` is what the handler returns."""

    __slots__ = ("request", "response")

    def __init__(self, request: web.Request) -> None:
        super().__init__(request.headers, request.remote, request.version >= (1, 1))
        self.request = request
        self.response: web.StreamResponse | None = None

    async def body(self, timeout: float, max_bytes: int) -> bytes:
        content = self.request.content
        if content.is_eof():  # the whole body came with the headers: take it as it is (no timer, no copy)
            raw = content.read_nowait()
            if len(raw) > max_bytes:
                raise web.HTTPRequestEntityTooLarge(max_bytes, len(raw))
            return raw
        try:
            async with asyncio.timeout(timeout):
                return await self.request.read()
        except TimeoutError:
            raise body_timeout_error(timeout) from None

    def whole(self, status: int, headers: Mapping[str, str], body: bytes) -> None:
        self.status, self.response = status, web.Response(body=body, status=status, headers=headers)

    def error(self, exc: HTTPError, request_id: str) -> None:
        self.status, self.response = exc.status, error_response(exc, request_id)
        if exc.status == 408:
            self.response.force_close()  # the rest of the body may still be on its way

    async def start_stream(self, status: int, headers: Mapping[str, str]) -> asyncio.Transport:
        self.status = status
        resp = self.response = web.StreamResponse(status=status, headers=headers)
        if self.chunked:
            resp.enable_chunked_encoding()
        await resp.prepare(self.request)
        if self.request.transport is None:
            raise ConnectionResetError
        return self.request.transport

    async def write(self, data: bytes) -> None:
        assert self.response is not None
        await self.response.write(data)

    async def end(self) -> None:
        assert self.response is not None
        await self.response.write_eof()
