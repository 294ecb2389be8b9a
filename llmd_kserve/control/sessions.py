"""Sessions as the front ends see them: whether a request continues a live session (turn priority), where a
session lives (``/debug/sessions``), and the session metrics, read from the current scheduler's
``session-affinity-filter`` plugins."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from llmd_kserve.control.holder import SchedulerHolder
from llmd_kserve.scheduling.session_affinity_filter import SessionAffinityFilter
from llmd_kserve.scheduling.session_keys import AGENT_SEPARATOR, session_key
from llmd_kserve.types import LLMRequest


def session_filters(holder: SchedulerHolder) -> list[SessionAffinityFilter]:
    """The session plugins of the current config (none: the config has no session affinity)."""
    return [p for p in holder.current.plugins.values() if isinstance(p, SessionAffinityFilter)]


def continues_session(holder: SchedulerHolder, request: LLMRequest) -> bool:
    """Whether ``request`` is a turn of a session that is live (placed before and not idle too long)."""
    for f in session_filters(holder):
        key = session_key(request, f.params.header.lower(), f.params.agent_header.lower())
        if key is not None and f.home_of(key) is not None:
            return True
    return False


def describe_session(holder: SchedulerHolder, session: str, agent: str | None = None) -> dict[str, Any] | None:
    """A live session's home (and its sub-agent's, with ``agent``), turns and moves; None when not live."""
    key = f"{session}{AGENT_SEPARATOR}{agent}" if agent else session
    for f in session_filters(holder):
        entry = f.home_of(key)
        if entry is not None:
            return {"session": session, "agent": agent, "home": entry.home, "turns": entry.turns,
                    "moves": entry.moves, "idle_s": round(f.table_clock() - entry.last_seen, 3)}
    return None


class SessionCollector:
    """``llmd_router_session_moves_total{reason}`` and ``llmd_router_sessions_live``, read at scrape time."""

    def __init__(self, holder: SchedulerHolder) -> None:
        self.holder = holder

    def collect(self) -> Iterator[Any]:
        filters = session_filters(self.holder)
        moves = CounterMetricFamily("llmd_router_session_moves", "Sessions moved off their home endpoint (reason: "
                                    "ttft, decode, kv saturation; unavailable: the home left the candidates)",
                                    labels=["reason"])
        total: Counter[str] = Counter()
        for f in filters:
            total.update(f.moves)
        for reason in ("ttft", "decode", "kv", "unavailable", *sorted(set(total) - {"ttft", "decode", "kv",
                                                                                 "unavailable"})):
            moves.add_metric([reason], total.get(reason, 0))
        yield moves
        live = GaugeMetricFamily("llmd_router_sessions_live", "Sessions (and sub-agents) with a turn within the "
                                 "session idle time")
        live.add_metric([], sum(f.live() for f in filters))
        yield live
