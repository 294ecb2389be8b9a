"""``session-affinity-filter`` in the real scheduler (``sessions`` config): home until saturated, one move, stay,
sub-agents, idle sessions forgotten; the session key's sources; sessions derived from a trace's hash ids."""

from __future__ import annotations

from llmd_kserve.bench.trace_sessions import session_ids
from llmd_kserve.config.build import build_scheduler
from llmd_kserve.scheduling.session_keys import session_key
from llmd_kserve.scheduling.session_table import SessionTable
from llmd_kserve.types import EndpointId, LLMRequest, RequestOutcome
from tests.scheduling.sched_fixtures import endpoint, make_ctx, prompt, request


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def setup():
    clock = Clock()
    sched = build_scheduler("sessions", make_ctx(clock=clock))
    plugin = next(p for p in sched.plugins.values() if p.type == "session-affinity-filter")
    return clock, sched, plugin


def turn(sched, rid: str, eps, seed: int, **kw) -> EndpointId:
    req = request(rid, prompt(seed, 200), **kw)
    result = sched.schedule(req, eps)
    sched.on_complete(req, result, RequestOutcome(ok=True))
    return result.target


def test_turns_stay_home_move_once_on_kv_saturation_and_stay_through_the_stay_time():
    clock, sched, plugin = setup()
    eps = [endpoint(1), endpoint(2), endpoint(3)]
    home = turn(sched, "t0", eps, 0, session_id="s")
    for i in range(1, 6):  # unrelated prompts: only the session keeps them together
        clock.t += 1
        assert turn(sched, f"t{i}", eps, i, session_id="s") == home
    full = [endpoint(int(e.id.split(".")[-1].split(":")[0]), kv_usage=0.99 if e.id == home else 0.1) for e in eps]
    clock.t += 1
    moved = turn(sched, "m", full, 50, session_id="s")
    assert moved != home and dict(plugin.moves) == {"kv": 1}
    all_full = [endpoint(int(e.id.split(".")[-1].split(":")[0]), kv_usage=0.99) for e in eps]
    for i in range(5):  # the new home saturates too, within stayS: no ping-pong
        clock.t += 1
        assert turn(sched, f"s{i}", all_full, 60 + i, session_id="s") == moved
    assert sum(plugin.moves.values()) == 1 and plugin.home_of("s").moves == 1
    assert plugin.live() == 1
    clock.t += 601  # idle longer than idleS: forgotten
    assert plugin.live() == 0 and plugin.home_of("s") is None


def test_an_unavailable_home_is_replaced_and_counted():
    clock, sched, plugin = setup()
    eps = [endpoint(1), endpoint(2)]
    home = turn(sched, "a", eps, 1, session_id="s")
    rest = [e for e in eps if e.id != home]
    assert turn(sched, "b", rest, 2, session_id="s") == rest[0].id
    assert dict(plugin.moves) == {"unavailable": 1}
    sched.remove_endpoint(rest[0].id)
    assert plugin.home_of("s") is None


def test_session_key_sources_and_sub_agents():
    def req(headers=None, **body) -> LLMRequest:
        return LLMRequest("r", "m", body, headers=headers or {})

    assert session_key(req({"x-session-id": "h"}, user="u")) == "h"
    assert session_key(req(user="u", metadata={"session_id": "m"})) == "u"
    assert session_key(req(metadata={"session_id": "m"})) == "m"
    assert session_key(req(metadata={"session_id": 3})) is None and session_key(req()) is None
    assert session_key(req({"x-session-id": "h", "x-agent-id": "a"})) == "h\x1fa"
    assert session_key(req({"x-session-id": "h", "x-agent-id": "a"}), agent_header="") == "h"
    assert len(session_key(req({"x-session-id": "x" * 10_000}))) == 256


def test_the_table_is_bounded():
    table = SessionTable(max_sessions=3, idle_s=10)
    for i in range(5):
        table.touch(f"s{i}", EndpointId("e"), float(i))
    assert len(table) == 3 and table.get("s0", 5.0) is None and table.get("s4", 5.0) is not None


def test_trace_sessions_follow_hash_id_chains():
    ids = session_ids([[1, 2, 3], [1, 2, 3, 4, 5], [9, 8], [1, 2, 7], [1, 2, 3, 4, 5, 6], [9, 8, 1], [1]])
    # 1: extends 0 (whole prefix); 3: shares only [1, 2] = request 0 minus its last block; 4: extends 1;
    # 5: extends 2; 6: one block is too short to be a continuation
    assert ids == ["s0", "s0", "s2", "s0", "s0", "s2", "s6"]


def test_a_table_adopts_a_home_another_replica_placed() -> None:
    from llmd_kserve.scheduling.session_table import SessionTable
    from llmd_kserve.types import EndpointId

    t = SessionTable(max_sessions=2, idle_s=10.0)
    t.adopt("s", EndpointId("http://a:1"), now=0.0)
    entry = t.get("s", 1.0)
    assert entry is not None and entry.home == "http://a:1" and entry.turns == 0
    t.touch("s", EndpointId("http://a:1"), 2.0)
    t.adopt("s", EndpointId("http://b:1"), now=3.0)  # moved on another replica: follow it
    entry = t.get("s", 3.0)
    assert entry is not None and entry.home == "http://b:1" and entry.turns == 1 and entry.last_seen == 3.0
    t.adopt("x", EndpointId("http://a:1"), now=4.0)
    t.adopt("y", EndpointId("http://a:1"), now=5.0)
    assert len(t) == 2 and t.get("s", 5.0) is None  # bounded: the least recently seen went
