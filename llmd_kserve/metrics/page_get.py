"""A minimal HTTP/1.1 GET of one URL over one kept-alive connection: the scraper's 20 Hz metrics fetch, without a
general client's per-request machinery (request objects, cookie and redirect handling, timers, tracing).

Plain ``http://`` only. Bodies by ``Content-Length``, chunked, or up to the connection's end; ``gzip`` bodies are
unzipped (the request asks for ``identity``). Connection problems raise ``ConnectionError`` (a kept-alive connection
the server had closed is retried once on a new one), malformed answers ``ValueError``. No timeout of its own: the
caller bounds the call and, when it gives up (timeout, cancel), the connection is dropped.
"""

from __future__ import annotations

import asyncio
import gzip

from yarl import URL

MAX_HEAD = 64 * 1024
MAX_BODY = 64 * 1024 * 1024


class PageGetter:
    """``await get(url)`` -> (status, body), for URLs of one ``http://host:port``; concurrent calls take turns."""

    def __init__(self, origin: URL) -> None:
        if origin.scheme != "http" or not origin.host:
            raise ValueError(f"PageGetter needs an http:// URL, not {origin}")
        self.host, self.port = origin.host, origin.port or 80
        self._host_header = f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"
        self._requests: dict[str, bytes] = {}
        self._turn = asyncio.Lock()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def get(self, url: URL) -> tuple[int, bytes]:
        target = url.raw_path_qs
        request = self._requests.get(target)
        if request is None:
            request = self._requests[target] = (
                f"GET {target} HTTP/1.1\r\nHost: {self._host_header}\r\nAccept-Encoding: identity\r\n"
                "Connection: keep-alive\r\n\r\n").encode("latin-1")
        async with self._turn:
            return await self._get(request)

    async def _get(self, request: bytes) -> tuple[int, bytes]:
        try:
            for _ in range(2):
                fresh = self._writer is None
                if fresh:
                    try:
                        self._reader, self._writer = await asyncio.open_connection(self.host, self.port,
                                                                                   limit=MAX_HEAD)
                    except OSError as exc:
                        raise ConnectionError(f"cannot connect to {self._host_header}: {exc}") from exc
                try:
                    return await self._exchange(request)
                except (ConnectionError, asyncio.IncompleteReadError) as exc:
                    self.close()
                    if fresh:  # a new connection failed: the server's fault, not a stale keep-alive
                        raise ConnectionError(f"{type(exc).__name__}: {exc}") from exc
            raise AssertionError("unreachable")
        except BaseException:  # timeout, cancel, bad answer: the connection's state is unknown
            self.close()
            raise

    async def _exchange(self, request: bytes) -> tuple[int, bytes]:
        assert self._reader is not None and self._writer is not None
        reader = self._reader
        self._writer.write(request)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:
            raise ValueError("response header over 64 kB") from None
        lines = head.decode("latin-1").split("\r\n")
        version, _, rest = lines[0].partition(" ")
        try:
            status = int(rest[:3])
        except ValueError:
            raise ValueError(f"bad status line {lines[0][:100]!r}") from None
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        keep = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
        if "content-length" in headers:
            n = int(headers["content-length"])
            if not 0 <= n <= MAX_BODY:
                raise ValueError(f"bad content-length {n}")
            body = await reader.readexactly(n)
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            body = await self._chunked(reader)
        else:
            body, keep = await reader.read(MAX_BODY), False
        if not keep:
            self.close()
        encoding = headers.get("content-encoding", "identity").lower()
        if encoding == "gzip":
            body = gzip.decompress(body)
        elif encoding != "identity":
            raise ValueError(f"unsupported content-encoding {encoding!r}")
        return status, body

    @staticmethod
    async def _chunked(reader: asyncio.StreamReader) -> bytes:
        parts: list[bytes] = []
        total = 0
        while True:
            size_line = await reader.readuntil(b"\r\n")
            n = int(size_line.split(b";", 1)[0].strip(), 16)
            if n == 0:
                while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers
                    pass
                return b"".join(parts)
            total += n
            if total > MAX_BODY:
                raise ValueError("chunked body over the limit")
            parts.append((await reader.readexactly(n + 2))[:-2])

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None
