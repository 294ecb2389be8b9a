"""Session homes and ``previous_response_id`` pins in the shared store (``--state-url`` with ``--shared-sessions``),
so that a conversation continues on its home endpoint whichever router or EPP replica its next turn reaches.

Before a request is scheduled, :meth:`SharedSessions.recall` reads its session's home (one ``MGET`` over the keys of
the config's ``session-affinity-filter`` plugins) and the local table adopts it; after a pick, :meth:`remember`
writes the home back with the filter's ``idleS`` as TTL (in the background: the answer does not wait for it). A
response id is written when it is learnt and read when a request names it and this replica does not know it.
Keys: ``llmd:_:session:<session key>`` and ``llmd:_:response:<id>``.

Failure policy: fail open. When Redis is unreachable, a turn is placed by this replica's own table (as without
sharing: a session it has not seen is placed fresh) and a write is dropped; every failed call is counted in
``llmd_router_state_errors_total{op}`` (``session_get``, ``session_set``, ``response_get``, ``response_set``).
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Mapping
from typing import Any

from llmd_kserve.control.holder import SchedulerHolder
from llmd_kserve.control.responses import ResponseHomes, previous_response_id
from llmd_kserve.control.sessions import session_filters
from llmd_kserve.scheduling.session_keys import session_key
from llmd_kserve.state_store import StateStore, StateUnavailable
from llmd_kserve.types import EndpointId, LLMRequest

log = logging.getLogger(__name__)
RESPONSE_TTL_S = 86_400.0
"""How long a response id's endpoint is kept in the store (the engine may have dropped it sooner)."""


class SharedSessions:
    """Reads and writes of session homes and response pins on one :class:`StateStore`; ``spawn`` runs a write in
    the background (the runtime's)."""

    def __init__(self, store: StateStore, holder: SchedulerHolder, spawn: Callable[[Any], Any],
                 response_ttl_s: float = RESPONSE_TTL_S) -> None:
        self.store, self.holder, self.spawn, self.response_ttl_s = store, holder, spawn, response_ttl_s

    @staticmethod
    def session_key(key: str) -> str:
        return StateStore.key("_", "session", key)

    @staticmethod
    def response_key(response_id: str) -> str:
        return StateStore.key("_", "response", response_id)

    def _keys(self, request: LLMRequest) -> list[tuple[Any, str]]:
        out = []
        for f in session_filters(self.holder):
            key = session_key(request, f.params.header.lower(), f.params.agent_header.lower())
            if key is not None:
                out.append((f, key))
        return out

    # --- sessions -------------------------------------------------------------------------------------------------
    async def recall(self, request: LLMRequest) -> int:
        """Adopt the stored home of each of ``request``'s session keys; how many were found (0 on a failure)."""
        pairs = self._keys(request)
        if not pairs:
            return 0
        client = self.store.client
        try:
            homes = await self.store.call("session_get", lambda: client.mget([self.session_key(k) for _, k in pairs]))
        except StateUnavailable:
            return 0  # fail open: this replica's own table decides
        found = 0
        for (f, key), home in zip(pairs, homes, strict=True):
            if home:
                f.adopt(key, EndpointId(str(home)))
                found += 1
        return found

    def remember(self, request: LLMRequest, target: EndpointId) -> None:
        """``request``'s session now lives on ``target``: written in the background with the filter's idle TTL."""
        pairs = self._keys(request)
        if pairs:
            self.spawn(self._write("session_set", [(self.session_key(k), f.params.idle_s) for f, k in pairs], target))

    async def _write(self, op: str, keys: list[tuple[str, float]], value: str) -> None:
        def pipeline() -> Any:
            p = self.store.client.pipeline(transaction=False)
            for key, ttl in keys:
                p.set(key, value, ex=max(1, math.ceil(ttl)))
            return p.execute()

        with contextlib.suppress(StateUnavailable):  # counted and logged by the store; the next turn writes again
            await self.store.call(op, pipeline)

    # --- responses ------------------------------------------------------------------------------------------------
    def remember_response(self, response_id: str, endpoint: EndpointId) -> None:
        self.spawn(self._write("response_set", [(self.response_key(response_id), self.response_ttl_s)], endpoint))

    async def recall_response(self, homes: ResponseHomes, body: Mapping[str, Any]) -> bool:
        """A request naming a ``previous_response_id`` this replica does not know: learn its endpoint from the store
        (True when found)."""
        prev = previous_response_id(body)
        if prev is None or homes.get(prev) is not None:
            return False
        client = self.store.client
        try:
            home = await self.store.call("response_get", lambda: client.get(self.response_key(prev)))
        except StateUnavailable:
            return False  # fail open: scheduled like a fresh request (the engine answers 404 if it lacks the id)
        if home:
            homes.learn(prev, EndpointId(str(home)), announce=False)
        return bool(home)
