"""Upstream time limits: the settings, the between-chunks deadline, the SSE error event a broken stream ends with."""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from llmd_kserve.errors import HTTPError

_encode = msgspec.json.Encoder().encode


@dataclass(frozen=True, slots=True)
class UpstreamTimeouts:
    """Seconds; ``connect`` is applied by the proxy's lean client (and the aiohttp session of the P/D prefill hop),
    the others by the proxy."""

    connect: float = 5.0
    first_byte: float = 120.0
    """Until the response headers (a non-streamed answer: the whole generation) and a stream's first event."""
    idle: float = 60.0
    """Between two chunks of a response body."""


DEFAULT_TIMEOUTS = UpstreamTimeouts()


def sse_error(exc: HTTPError) -> bytes:
    """The SSE event a stream ends with when its upstream broke or went silent (an OpenAI error body)."""
    return b"data: " + _encode(exc.body()) + b"\n\n"
