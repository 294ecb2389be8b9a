"""Scorer ``session-affinity-scorer``: prefer the endpoint that served the same session last time."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import ClassVar

from pydantic import Field

from llmd_kserve.plugins.base import (
    CycleState,
    EndpointRemoved,
    HandlerDecision,
    OnScheduled,
    PluginContext,
    PluginParams,
    Scores,
)
from llmd_kserve.types import EndpointId, EndpointState, LLMRequest


class SessionAffinityScorer(OnScheduled, EndpointRemoved):
    """Score 1.0 for the endpoint the request's session was last scheduled on, 0.0 elsewhere (and everywhere for
    a request without a session). The session is ``request.session_id``, else the ``header`` request header.
    Remembers the ``maxSessions`` most recent sessions. A preference among the others' scores, never more:
    ``session-affinity-filter`` keeps a session on its endpoint until that saturates, then moves it once."""

    type: ClassVar[str] = "session-affinity-scorer"
    kind: ClassVar[str] = "scorer"

    class Params(PluginParams):
        header: str = "x-session-id"
        max_sessions: int = Field(100_000, ge=1)

    requires: tuple[str, ...] = ()

    def __init__(self, name: str, params: Params, ctx: PluginContext) -> None:
        self.name = name
        self._header = params.header.lower()
        self._max = params.max_sessions
        self._sessions: OrderedDict[str, EndpointId] = OrderedDict()

    def session_of(self, request: LLMRequest) -> str | None:
        if request.session_id:
            return request.session_id
        for k, v in request.headers.items():
            if k.lower() == self._header:
                return v or None
        return None

    def score(self, state: CycleState, endpoints: Sequence[EndpointState]) -> Scores:
        session = self.session_of(state.request)
        last = self._sessions.get(session) if session else None
        return {e.endpoint.id: 1.0 if e.endpoint.id == last else 0.0 for e in endpoints}

    def on_scheduled(self, state: CycleState, decision: HandlerDecision) -> None:
        session = self.session_of(state.request)
        if session:
            self._sessions[session] = decision.target
            self._sessions.move_to_end(session)
            if len(self._sessions) > self._max:
                self._sessions.popitem(last=False)

    def remove_endpoint(self, endpoint_id: EndpointId) -> None:
        for s in [s for s, e in self._sessions.items() if e == endpoint_id]:
            del self._sessions[s]
