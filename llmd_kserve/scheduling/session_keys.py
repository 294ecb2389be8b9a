"""A request's session key: which conversation (and which of its sub-agents) a turn belongs to."""

from __future__ import annotations

from collections.abc import Mapping

from llmd_kserve.types import LLMRequest

MAX_KEY_CHARS = 256
"""Longer session ids are cut (they key a bounded table; a client cannot make one entry huge)."""
AGENT_SEPARATOR = "\x1f"


def header_value(headers: Mapping[str, str], name: str) -> str | None:
    """A header's value by case-insensitive ``name`` (lowercase), or None when absent or empty."""
    value = headers.get(name)
    if value is None and headers:
        value = next((v for k, v in headers.items() if k.lower() == name), None)
    return value or None


def session_of(request: LLMRequest, header: str = "x-session-id") -> str | None:
    """The session a request continues: the ``header`` request header, else the OpenAI ``user`` field, else
    ``metadata.session_id``, else the request's own ``session_id`` (the simulator sets it); None: no session."""
    value = header_value(request.headers, header)
    if value is None:
        body = request.body
        user = body.get("user")
        meta = body.get("metadata")
        if isinstance(user, str) and user:
            value = user
        elif isinstance(meta, Mapping) and isinstance(meta.get("session_id"), str) and meta["session_id"]:
            value = meta["session_id"]
        else:
            value = request.session_id or None
    return value[:MAX_KEY_CHARS] if value else None


def session_key(request: LLMRequest, header: str = "x-session-id", agent_header: str = "x-agent-id") -> str | None:
    """The key a turn is placed by: its session, plus the sub-agent named by ``agent_header`` when present (each
    sub-agent of a session then has a home of its own, so concurrent sub-agent calls may spread)."""
    session = session_of(request, header)
    if session is None:
        return None
    agent = header_value(request.headers, agent_header) if agent_header else None
    return f"{session}{AGENT_SEPARATOR}{agent[:MAX_KEY_CHARS]}" if agent else session
