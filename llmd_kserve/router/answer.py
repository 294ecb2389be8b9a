"""One client's side of an OpenAI request, as the proxy sees it: the request's headers and body, and the answer it
writes (whole, or an event stream a chunk at a time). Each HTTP server (aiohttp's, the lean one) implements it."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from llmd_kserve.errors import HTTPError


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
