"""Readiness verdicts (``control.readiness``) on hand-made endpoint states and subscription stats."""

from __future__ import annotations

from llmd_kserve.control.readiness import ReadinessGate, kv_warm
from llmd_kserve.kvcache.subscriber import SubscriptionStats
from llmd_kserve.types import Endpoint, EndpointId, EndpointMetrics, EndpointState

A, B = EndpointId("http://a:8000"), EndpointId("http://b:8000")
FRESH_USED = EndpointMetrics(prefix_queries=10.0, stale=False)


def _state(eid: EndpointId, metrics: EndpointMetrics = FRESH_USED, kv: bool = True) -> EndpointState:
    return EndpointState(Endpoint(eid, kv_events="tcp://x:5557" if kv else None), metrics)


def _sub(connected_at: float | None, last_message_at: float | None = None) -> SubscriptionStats:
    return SubscriptionStats("tcp://x:5557", connected_at=connected_at, last_message_at=last_message_at)


def test_kv_warm_rules():
    assert not kv_warm(None, FRESH_USED, 100.0, 5.0)  # not subscribed
    assert not kv_warm(_sub(None), FRESH_USED, 100.0, 5.0)  # not connected
    assert not kv_warm(_sub(99.0), FRESH_USED, 100.0, 5.0)  # connected, silent, within the grace period
    assert kv_warm(_sub(99.0, 99.5), FRESH_USED, 100.0, 5.0)  # an event since the connection
    assert not kv_warm(_sub(99.0, 98.0), FRESH_USED, 100.0, 5.0)  # an event from before a reconnection
    assert kv_warm(_sub(99.0), EndpointMetrics(prefix_queries=0.0, stale=False), 100.0, 5.0)  # empty cache
    assert kv_warm(_sub(90.0), FRESH_USED, 100.0, 5.0)  # silent past the grace period


def test_order_of_reasons_and_the_latch():
    gate = ReadinessGate(grace_s=5.0)
    assert gate.check([], lambda e: True, {}, True, 0.0).reason == "no_endpoints"
    r = gate.check([_state(A), _state(B)], lambda e: e == A, {}, True, 0.0)
    assert (r.ready, r.reason, r.waiting) == (False, "first_scrape", (B,))
    stale = EndpointMetrics(stale=True)
    r = gate.check([_state(A, stale), _state(B, stale)], lambda e: True, {}, True, 0.0)
    assert (r.reason, r.waiting) == ("no_healthy_endpoint", (A, B))
    # B is down (stale): only the fresh A is waited for; C has no KV stream (routed on the approximate index)
    c = EndpointId("http://c:8000")
    states = [_state(A), _state(B, stale), _state(c, kv=False)]
    r = gate.check(states, lambda e: True, {A: _sub(10.0)}, True, 11.0)
    assert (r.reason, r.waiting) == ("kv_warming", (A,))
    assert gate.check(states, lambda e: True, {A: _sub(10.0)}, False, 11.0).ready  # not routing on KV events
    gate = ReadinessGate(grace_s=5.0)
    assert gate.check(states, lambda e: True, {A: _sub(10.0, 10.5)}, True, 11.0).ready
    # once ready: a reconnecting stream or a new, unscraped endpoint does not take the replica out ...
    assert gate.check([*states, _state(EndpointId("http://d:8000"))], lambda e: e != "http://d:8000",
                      {A: _sub(None)}, True, 20.0).ready
    # ... having no fresh endpoint does
    assert gate.check([_state(A, stale)], lambda e: True, {}, True, 30.0).reason == "no_healthy_endpoint"
