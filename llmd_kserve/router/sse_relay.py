"""One streamed answer from the lean upstream client to the client's socket, a chunk at a time, in the callback.

Each upstream chunk is written to the client as one HTTP chunk (the response was prepared with chunked encoding;
an HTTP/1.0 client gets the bytes unframed and a closed connection at the end);
the usage event the router asked for is taken out, the last two chunks are kept for the usage accounting, the
content tokens the engine streamed are counted (the bill when a stream ends without the engine's usage), and a
client that reads too slowly pauses the upstream read until its socket buffer drains.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable

from llmd_kserve.control.usage import Usage, is_usage_only_event, usage_from_sse_tail
from llmd_kserve.lean_http import Exchange

HIGH_WATER = 256 * 1024
"""Bytes queued to a slow client before the upstream read pauses (resumed below a quarter of it)."""
_CONTENT = re.compile(rb'"(?:text|content)": ?"(?!")')
"""A choice's non-empty ``text`` (completions) or ``delta.content`` (chat): vLLM streams one token per such field.
(A quote inside a JSON string is escaped, so generated text cannot fake one.)"""


def content_tokens(payload: bytes) -> int:
    """Content tokens in a chunk of SSE events (the role event and an empty final event count none)."""
    return len(_CONTENT.findall(payload))


class SseRelay:
    """The ``Exchange`` sink for one stream; ``wait`` returns when the upstream answer ended."""

    def __init__(self, out: asyncio.Transport, exchange: Exchange, *, strip_usage: bool,
                 tap: Callable[[bytes], None] | None, on_first: Callable[[], None], chunked: bool = True) -> None:
        self.out, self.exchange, self.chunked = out, exchange, chunked
        self.strip_usage, self.tap, self.on_first = strip_usage, tap, on_first
        self.prev = self.last = self.usage_event = b""
        self.client_gone = False
        self.tokens = 0
        """Content tokens the engine streamed (also those that found the client gone)."""
        self.complete = False
        """The stream's ``data: [DONE]`` was written to the client: it has the whole answer."""
        self._drain: asyncio.Task[None] | None = None

    def __call__(self, payload: bytes) -> None:
        self.tokens += content_tokens(payload)
        if self.strip_usage and b'"usage"' in payload:
            events = payload.split(b"\n\n")
            kept = [e for e in events if not is_usage_only_event(e)]
            if len(kept) != len(events):
                self.usage_event = next(e for e in events if is_usage_only_event(e))
                payload = b"\n\n".join(kept)
        if not payload:
            return
        first = not self.last
        self.prev, self.last = self.last, payload  # for usage: kept even when the client is gone
        out = self.out
        if out.is_closing():
            self.client_gone = True
            self.exchange.close()  # the engine sees the disconnect and aborts the request
            return
        if first:
            self.on_first()
        out.write(b"%x\r\n%b\r\n" % (len(payload), payload) if self.chunked else payload)
        if payload.endswith(b"data: [DONE]\n\n"):
            self.complete = True
        if self.tap is not None:
            self.tap(payload)
        if self._drain is None and out.get_write_buffer_size() > HIGH_WATER:
            self.exchange.pause_reading()
            self._drain = asyncio.ensure_future(self._resume_when_drained())

    async def _resume_when_drained(self) -> None:
        while self.out.get_write_buffer_size() > HIGH_WATER // 4 and not self.out.is_closing():
            await asyncio.sleep(0.005)
        self.exchange.last_data = asyncio.get_running_loop().time()  # paused time is not upstream silence
        self._drain = None
        self.exchange.resume_reading()

    async def wait(self, idle: float) -> None:
        """Until the answer's end (``Exchange.wait``); a client gone shows as ``client_gone`` and ``UpstreamBroken``."""
        try:
            await self.exchange.wait(idle, paused=lambda: self._drain is not None)
        finally:
            if self._drain is not None:
                self._drain.cancel()

    @property
    def paused(self) -> bool:
        """The upstream read is paused for a slow client (its silence is not the engine's)."""
        return self._drain is not None

    def usage(self) -> Usage | None:
        return usage_from_sse_tail(self.usage_event or self.prev + self.last)

