"""Turn priority in the flow queue: inside a band a live session's next turn goes before new sessions' first
turns; bands still come first; off, arrival order (and tenant fairness) decide."""

from __future__ import annotations

from llmd_kserve.governance.flow import FlowPolicy, FlowQueue


def queue(turn_priority: bool = True) -> FlowQueue:
    return FlowQueue(lambda: 1, FlowPolicy(fair_share=False, headroom=0, turn_priority=turn_priority),
                     clock=lambda: 0.0)


def test_a_continuing_turn_is_dispatched_before_earlier_first_turns_of_its_band():
    q = queue()
    running = q.offer("t")
    new1, new2 = q.offer("t"), q.offer("u")
    cont = q.offer("u", turn=True)
    assert not any(w.dispatched for w in (new1, new2, cont))
    assert q.release(running) == [cont]
    assert q.release(cont) == [new1]


def test_a_higher_band_still_goes_first_and_turn_priority_can_be_off():
    q = queue()
    running = q.offer("t")
    q.offer("t", turn=True)
    high = q.offer("t", priority=5)
    assert q.release(running) == [high]
    off = queue(turn_priority=False)
    running = off.offer("t")
    first = off.offer("t")
    off.offer("t", turn=True)
    assert off.release(running) == [first]
