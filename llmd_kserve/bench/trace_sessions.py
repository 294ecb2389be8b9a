"""Sessions derived from a prefix trace: a request whose block hash ids extend an earlier request's continues it.

Mooncake traces carry no session id, but a conversation's next turn resends the whole conversation, so its hash ids
start with the previous turn's. Request ``j`` continues the session of an earlier request ``i`` when ``i``'s hash
ids (all of them, or all but its last, possibly partial, block) are a prefix of ``j``'s of at least ``min_blocks``
blocks; the longest such match wins. Anything else starts a session of its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from llmd_kserve.bench.workloads import RequestSpec, TraceSpec

MIN_BLOCKS = 2
"""Shared blocks a continuation needs at least (one block is often a shared system prompt, not a conversation)."""


def session_ids(hash_ids: Sequence[Sequence[int]], min_blocks: int = MIN_BLOCKS) -> list[str]:
    """One session id per request (in trace order), from the requests' hash ids."""
    known: dict[tuple[int, ...], str] = {}
    out = []
    for i, ids in enumerate(hash_ids):
        h = tuple(ids)
        session = next((known[h[:n]] for n in range(len(h) - 1, min_blocks - 1, -1) if h[:n] in known), None)
        if session is None:
            session = f"s{i}"
        out.append(session)
        if len(h) >= min_blocks:
            known[h] = session
        if len(h) > min_blocks:
            known[h[:-1]] = session
    return out


def with_sessions(spec: TraceSpec, requests: Sequence[RequestSpec]) -> list[RequestSpec]:
    """``requests`` built from ``spec`` (ids ``trace-<entry index>``) with the derived session ids set."""
    ids = session_ids([e.hash_ids for e in spec.entries])
    return [replace(r, session_id=ids[int(r.request_id.rsplit("-", 1)[1])]) for r in requests]
