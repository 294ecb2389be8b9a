"""Live-sweep pacing: requests per point, session turn order as sent, send lateness (pure, no live runs)."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from llmd_kserve.bench.pacing import point_requests, send_lateness, session_order_violations
from llmd_kserve.bench.scenarios import SCENARIOS
from llmd_kserve.bench.stats import RequestResult
from llmd_kserve.bench.workloads import RequestSpec


def test_point_requests_grows_with_rate_except_for_sessions() -> None:
    assert point_requests(10, 4, 3, 160, sessions=False) == 160  # 120 virtual-second arrivals < the floor
    assert point_requests(30, 4, 3, 160, sessions=False) == 360
    assert point_requests(30, 4, 3, 240, sessions=True) == 240  # more would be more sessions: another workload
    assert point_requests(0.5, 0.5, 3, 64, sessions=True) == 64


@pytest.mark.parametrize("args", [(0, 1, 3, 10), (1, 0, 3, 10), (1, 1, -1, 10), (1, 1, 3, 0)])
def test_point_requests_rejects_bad_input(args: tuple[float, float, float, int]) -> None:
    with pytest.raises(ValueError):
        point_requests(*args, sessions=False)


@pytest.mark.parametrize("name", ["chat", "agentic"])
def test_session_scenarios_send_turns_in_build_order(name: str) -> None:
    sc = SCENARIOS[name]
    n = 48 if name == "chat" else 16
    reqs = sc.build(10.0, random.Random(3), n)
    assert {r.session_id for r in reqs} and all(r.session_id for r in reqs)
    assert session_order_violations(reqs) == []
    by_session: dict[str, list[RequestSpec]] = {}
    for r in sorted(reqs, key=lambda x: x.arrival_s or 0.0):
        by_session.setdefault(r.session_id or "", []).append(r)
    for turns in by_session.values():  # each sent turn's prompt extends the previous one's messages
        for prev, nxt in zip(turns, turns[1:], strict=False):
            assert nxt.messages is not None and prev.messages is not None
            assert nxt.messages[: len(prev.messages)] == prev.messages


def test_session_order_violation_is_named() -> None:
    a = RequestSpec("s0-t0", 0.0, "x", 1, 1, "chat", "s0")
    b = RequestSpec("s0-t1", 1.0, "x y", 1, 2, "chat", "s0")
    c = RequestSpec("s1-t0", 0.5, "z", 1, 1, "chat", "s1")
    assert session_order_violations([a, b, c]) == []
    assert session_order_violations([replace(a, arrival_s=2.0), b, c]) == ["s0"]
    assert session_order_violations([RequestSpec("p", 0.0, "x", 1, 1)]) == []  # no sessions: nothing to check


def test_send_lateness() -> None:
    reqs = [RequestSpec(f"r{i}", float(i), "x", 1, 1) for i in range(3)]
    results = [RequestResult("r0", True, start=0.001), RequestResult("r1", True, start=1.05),
               RequestResult("r2", True, start=1.9), RequestResult("other", True, start=9.0)]
    late = send_lateness(reqs, results)
    assert late["late_max"] == pytest.approx(0.05)
    assert late["late_p50"] == pytest.approx(0.001)  # early sends (clock jitter) count as on time
    assert send_lateness(reqs, []) == {"late_p50": None, "late_p99": None, "late_max": None}
