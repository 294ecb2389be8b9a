"""Upstream time limits: the settings, the between-chunks deadline, the SSE error event a broken stream ends with."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import msgspec

from llmd_kserve.errors import HTTPError

_encode = msgspec.json.Encoder().encode


@dataclass(frozen=True, slots=True)
class UpstreamTimeouts:
    """Seconds; ``connect`` is applied by the router's session, the others by the proxy."""

    connect: float = 5.0
    first_byte: float = 120.0
    """Until the response headers (a non-streamed answer: the whole generation) and a stream's first event."""
    idle: float = 60.0
    """Between two chunks of a response body (fires idle..1.25 x idle after the last chunk)."""


DEFAULT_TIMEOUTS = UpstreamTimeouts()


def sse_error(exc: HTTPError) -> bytes:
    """The SSE event a stream ends with when its upstream broke or went silent (an OpenAI error body)."""
    return b"data: " + _encode(exc.body()) + b"\n\n"


def idle_deadline(cm: asyncio.Timeout, now: float, idle: float) -> None:
    """Keep ``cm`` at least ``idle`` s ahead of ``now``: moved 1.25 x idle ahead only when it got closer, so a
    stream of many small chunks does not pay a timer per chunk (the timeout fires idle..1.25 x idle after the
    last chunk)."""
    when = cm.when()
    if when is None or when - now < idle:
        cm.reschedule(now + 1.25 * idle)
