"""Where each live session's context is: its home endpoint, bounded in count and forgotten after an idle spell."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from llmd_kserve.types import EndpointId


@dataclass(slots=True)
class SessionHome:
    """One session's placement."""

    home: EndpointId
    last_seen: float
    """When its last turn was scheduled."""
    moved_at: float | None = None
    """When it last moved (None: never); it stays put for ``stay_s`` after a move."""
    turns: int = 1
    moves: int = 0


class SessionTable:
    """Session key -> :class:`SessionHome`, least recently seen first; at most ``max_sessions`` entries, and an
    entry idle for ``idle_s`` is gone."""

    def __init__(self, max_sessions: int, idle_s: float) -> None:
        self.max_sessions, self.idle_s = max_sessions, idle_s
        self._homes: OrderedDict[str, SessionHome] = OrderedDict()

    def get(self, key: str, now: float) -> SessionHome | None:
        """The live session ``key`` (None: unknown, or idle too long)."""
        entry = self._homes.get(key)
        if entry is not None and now - entry.last_seen > self.idle_s:
            del self._homes[key]
            return None
        return entry

    def touch(self, key: str, target: EndpointId, now: float) -> tuple[SessionHome, EndpointId | None]:
        """A turn of ``key`` was scheduled on ``target``: (its entry, the home it left when that moved it)."""
        entry = self.get(key, now)
        left = None
        if entry is None:
            entry = self._homes[key] = SessionHome(target, now)
        else:
            entry.turns += 1
            entry.last_seen = now
            if entry.home != target:
                left, entry.home, entry.moved_at = entry.home, target, now
                entry.moves += 1
            self._homes.move_to_end(key)
        while len(self._homes) > self.max_sessions:
            self._homes.popitem(last=False)
        return entry, left

    def adopt(self, key: str, home: EndpointId, now: float) -> None:
        """Another replica placed ``key`` last (the shared store says so): its home is ``home`` from now on."""
        entry = self.get(key, now)
        if entry is None:
            self._homes[key] = SessionHome(home, now, turns=0)
            while len(self._homes) > self.max_sessions:
                self._homes.popitem(last=False)
            return
        if entry.home != home:
            entry.home = home
        entry.last_seen = now
        self._homes.move_to_end(key)

    def live(self, now: float) -> int:
        """Sessions seen within ``idle_s`` (the idle ones are dropped on the way)."""
        homes, limit = self._homes, now - self.idle_s
        while homes:
            key, entry = next(iter(homes.items()))
            if entry.last_seen >= limit:
                break
            del homes[key]
        return len(homes)

    def remove_endpoint(self, endpoint: EndpointId) -> list[str]:
        """Forget the homes on an endpoint that left the pool (their sessions are placed afresh); their keys."""
        gone = [k for k, e in self._homes.items() if e.home == endpoint]
        for k in gone:
            del self._homes[k]
        return gone

    def moved(self) -> int:
        """Sessions that moved at least once."""
        return sum(1 for e in self._homes.values() if e.moves)

    def __len__(self) -> int:
        return len(self._homes)
