"""The ``usage`` object of an upstream answer: from a JSON body, or from the tail of an SSE stream."""

from __future__ import annotations

import msgspec


class _Details(msgspec.Struct):
    cached_tokens: int | None = None


class Usage(msgspec.Struct):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    prompt_tokens_details: _Details | None = None


class _WithUsage(msgspec.Struct):
    usage: Usage | None = None


_usage_decode = msgspec.json.Decoder(_WithUsage).decode


def parse_usage(raw: bytes) -> Usage | None:
    """``usage`` of a JSON body (unknown fields skipped by msgspec), or None."""
    try:
        return _usage_decode(raw).usage
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


def usage_from_sse_tail(tail: bytes) -> Usage | None:
    """The usage object of the last ``data:`` event carrying one in the stream's tail."""
    idx = tail.rfind(b'"usage"')
    if idx < 0:
        return None
    start = tail.rfind(b"data:", 0, idx)
    end = tail.find(b"\n", idx)
    if start < 0:
        return None
    return parse_usage(tail[start + 5 : end if end >= 0 else len(tail)].strip())


def is_usage_only_event(event: bytes) -> bool:
    return event.startswith(b"data: {") and b'"usage"' in event and b'"choices":[]' in event
