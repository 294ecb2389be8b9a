"""Filter ``session-affinity-filter``: a session's turns stay on the endpoint holding its context until that endpoint
saturates; then the session moves once, to the best other endpoint, and stays there."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import ClassVar

from pydantic import Field

from llmd_kserve.plugins.base import CycleState, EndpointRemoved, HandlerDecision, OnScheduled, PluginContext
from llmd_kserve.scheduling.session_keys import session_key
from llmd_kserve.scheduling.session_table import SessionHome, SessionTable
from llmd_kserve.scheduling.ttft import TTFTEstimator, TTFTParams, endpoint_profile
from llmd_kserve.types import NO_LOAD, EndpointId, EndpointState

_STATE = "session-affinity-filter"
"""``CycleState.data`` key: (session key, the reason the home was left, or None)."""


class SessionAffinityFilter(OnScheduled, EndpointRemoved):
    """Keeps only a session's *home* (the endpoint its last turn went to) while the home is not saturated; a new
    session, or a request without one, keeps every candidate, and the endpoint the other plugins pick becomes its
    home. The session is the ``header`` request header (``x-session-id``), else the OpenAI ``user`` field, else
    ``metadata.session_id``; a request that also names a sub-agent (``agentHeader``, ``x-agent-id``) is placed by
    session and sub-agent, so concurrent sub-agent calls may spread over endpoints.

    The home is *saturated* when any of these holds (each against the other candidates):
    ``ttft``: its predicted TTFT (with the session's cached prefix) exceeds the best other endpoint's by
    ``ttftRatio`` times and by ``minMarginS`` seconds; ``decode``: its predicted decode step with this request
    exceeds ``maxStepS`` while another's does not; ``kv``: its scraped KV-cache usage is at least ``maxKvUsage``
    while another's is below. Then the home is dropped from the candidates (the other plugins pick the best other
    endpoint) and the session moves there. After a move the session stays on its new home for ``stayS`` seconds
    whatever the load (hysteresis: no ping-pong); a home that left the candidates (unhealthy, removed) is replaced
    at once. Sessions idle for ``idleS`` are forgotten; at most ``maxSessions`` are kept."""

    type: ClassVar[str] = "session-affinity-filter"
    kind: ClassVar[str] = "filter"

    class Params(TTFTParams):
        header: str = "x-session-id"
        agent_header: str = "x-agent-id"
        """Sub-agent header (empty: sub-agents share their session's home)."""
        ttft_ratio: float = Field(1.5, ge=1.0)
        min_margin_s: float = Field(0.05, ge=0.0)
        max_step_s: float | None = Field(0.04, gt=0)
        """Decode step budget (None: no decode check)."""
        max_kv_usage: float = Field(0.98, gt=0.0, le=1.0)
        stay_s: float = Field(30.0, ge=0.0)
        idle_s: float = Field(600.0, gt=0.0)
        max_sessions: int = Field(100_000, ge=1)

    def __init__(self, name: str, params: Params, ctx: PluginContext) -> None:
        self.name = name
        self.params = params
        self._clock = ctx.clock
        self._profile = ctx.profile
        self._ttft = TTFTEstimator(params, ctx)
        self.requires = self._ttft.requires
        self._header, self._agent = params.header.lower(), params.agent_header.lower()
        self.table = SessionTable(params.max_sessions, params.idle_s)
        self.moves: Counter[str] = Counter()
        """Moves by reason (``ttft``, ``decode``, ``kv``, ``unavailable``) since this plugin was built."""

    def home_of(self, key: str) -> SessionHome | None:
        """A live session's placement (``/debug/sessions``)."""
        return self.table.get(key, self._clock())

    def live(self) -> int:
        return self.table.live(self._clock())

    def adopt(self, key: str, home: EndpointId) -> None:
        """Another replica placed session ``key`` on ``home`` (shared sessions): its next turn goes there too."""
        self.table.adopt(key, home, self._clock())

    def table_clock(self) -> float:
        """Now, on the clock the table keeps time with."""
        return self._clock()

    def filter(self, state: CycleState, endpoints: Sequence[EndpointState]) -> Sequence[EndpointState]:
        key = session_key(state.request, self._header, self._agent)
        if key is None:
            return endpoints
        entry = self.table.get(key, self._clock())
        if entry is None:
            state.data[_STATE] = (key, None)
            return endpoints
        home = next((e for e in endpoints if e.endpoint.id == entry.home), None)
        if home is None:
            state.data[_STATE] = (key, "unavailable")
            return endpoints
        state.data[_STATE] = (key, None)
        others = [e for e in endpoints if e is not home]
        if not others or (entry.moved_at is not None and self._clock() - entry.moved_at < self.params.stay_s):
            return [home]
        reason = self.saturation(state, home, others)
        if reason is None:
            return [home]
        state.data[_STATE] = (key, reason)
        return others

    def saturation(self, state: CycleState, home: EndpointState, others: Sequence[EndpointState]) -> str | None:
        """Why ``home`` is saturated compared with ``others`` (``kv``, ``decode``, ``ttft``), or None."""
        p = self.params
        m = home.metrics
        if not m.stale and m.kv_usage >= p.max_kv_usage and any(
                not o.metrics.stale and o.metrics.kv_usage < p.max_kv_usage for o in others):
            return "kv"
        if p.max_step_s is not None and self._step(state, home) > p.max_step_s and any(
                self._step(state, o) <= p.max_step_s for o in others):
            return "decode"
        t_home = self._ttft(state, home)
        t_best = min(self._ttft(state, o) for o in others)
        if t_home > p.ttft_ratio * t_best and t_home - t_best > p.min_margin_s:
            return "ttft"
        return None

    def _step(self, state: CycleState, e: EndpointState) -> float:
        """Predicted decode step on ``e`` with this request in its batch (as ``decode-budget-filter`` predicts it)."""
        eid, m = e.endpoint.id, e.metrics
        n = max(m.running + m.waiting + (state.unscraped or {}).get(eid, NO_LOAD).requests,
                (state.inflight or {}).get(eid, NO_LOAD).requests) + 1
        return endpoint_profile(e.endpoint, self._profile).step_time(0, 0, n, n * max(state.prompt_tokens, 1))

    def on_scheduled(self, state: CycleState, decision: HandlerDecision) -> None:
        seen = state.data.get(_STATE)
        if seen is None:
            return
        key, reason = seen
        _, left = self.table.touch(key, decision.target, self._clock())
        if left is not None:
            self.moves[reason or "elsewhere"] += 1

    def remove_endpoint(self, endpoint_id: EndpointId) -> None:
        self.table.remove_endpoint(endpoint_id)
