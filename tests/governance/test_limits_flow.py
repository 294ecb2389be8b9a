"""Rate limits, budgets and the flow-control queue (synchronous cores, fake clock)."""

from __future__ import annotations

import asyncio

import pytest

from llmd_kserve.governance.flow import FlowController, FlowPolicy, FlowQueue
from llmd_kserve.governance.keys import VirtualKey
from llmd_kserve.governance.limits import RateLimited, RateLimiter
from tests.governance.test_keys import Clock


def test_rpm_refuses_with_retry_after_and_refills():
    clock = Clock()
    lim, key = RateLimiter(clock), VirtualKey("k", rpm=2)
    lim.admit(key)
    lim.admit(key)
    with pytest.raises(RateLimited) as exc:
        lim.admit(key)
    assert exc.value.status == 429 and exc.value.headers["Retry-After"] == "30"
    assert exc.value.headers["x-llmd-drop-reason"] == "rpm"
    clock.t = 30
    lim.admit(key)


def test_tpm_charged_after_the_answer_and_budget():
    clock = Clock()
    lim = RateLimiter(clock)
    key = VirtualKey("k", tpm=600, token_budget=1000)
    lim.admit(key)
    lim.charge(key, 900)  # into debt: 600 - 900 = -300 tokens, refilled at 10/s
    with pytest.raises(RateLimited) as exc:
        lim.admit(key)
    assert exc.value.reason == "tpm" and int(exc.value.headers["Retry-After"]) == 31
    clock.t = 31
    lim.admit(key)
    lim.charge(key, 200)
    clock.t = 1000
    with pytest.raises(RateLimited) as exc:
        lim.admit(key)
    assert exc.value.reason == "budget" and "Retry-After" not in exc.value.headers and lim.used("k") == 1100


def test_unlimited_key_is_never_tracked():
    lim = RateLimiter()
    for _ in range(1000):
        lim.admit(VirtualKey("k"))
    assert lim.used("k") == 0 and not lim._usage


def test_flow_queue_priority_then_fewest_in_flight_tenant():
    clock = Clock()
    q = FlowQueue(lambda: 2, FlowPolicy(per_band_capacity=100, fair_share=False, headroom=0), clock)
    running = [q.offer("A"), q.offer("A")]
    assert all(w.dispatched for w in running)
    waiting = []
    for i in range(5):
        clock.t = i
        waiting.append(q.offer("A"))
    clock.t = 10
    b = q.offer("B")
    hi = q.offer("C", priority=5)
    assert not b.dispatched and q.depth() == {0: 6, 5: 1}
    assert q.release(running[0]) == [hi]  # the higher band first
    assert q.release(running[1]) == [b]  # B has none in flight, A has two: B first though it came last
    assert q.release(hi) == [waiting[0]]


def test_flow_queue_band_capacity_ttl_and_tenant_cap():
    clock = Clock()
    q = FlowQueue(lambda: 1, FlowPolicy(per_band_capacity=2, ttl_s=5), clock)
    first = q.offer("A")
    q.offer("A")
    q.offer("B")
    with pytest.raises(RateLimited) as exc:
        q.offer("B")
    assert exc.value.status == 429 and exc.value.headers["x-llmd-drop-reason"] == "band_full"
    clock.t = 6
    assert len(q.expired()) == 2 and q.depth() == {}
    capped = FlowQueue(lambda: 10, FlowPolicy(), clock)
    one = capped.offer("A", max_concurrency=1)
    two = capped.offer("A", max_concurrency=1)
    assert one.dispatched and not two.dispatched
    assert capped.release(one) == [two]
    assert first.dispatched


async def test_controller_ttl_is_503_and_cancel_frees_the_slot():
    ctl = FlowController(FlowQueue(lambda: 1, FlowPolicy(ttl_s=0.05)))
    held = await ctl.acquire("A")
    with pytest.raises(RateLimited) as exc:
        await ctl.acquire("B")
    assert exc.value.status == 503 and exc.value.reason == "ttl_expired"
    waiter = asyncio.ensure_future(ctl.acquire("B"))
    await asyncio.sleep(0)
    ctl.release(held)
    got = await waiter
    assert got.dispatched and ctl.queue.in_flight == 1
    ctl.release(got)
    assert ctl.queue.in_flight == 0 and ctl.queue.depth() == {}


def test_fair_share_keeps_slots_for_another_active_tenant():
    clock = Clock()
    q = FlowQueue(lambda: 4, FlowPolicy(active_window_s=5, headroom=0), clock)
    alone = [q.offer("A") for _ in range(4)]
    assert all(w.dispatched for w in alone)  # alone and without headroom, A may use every slot
    b1 = q.offer("B")
    assert not b1.dispatched
    assert q.release(alone[0]) == [b1]
    queued_a = q.offer("A")
    q.release(alone[1])
    assert not queued_a.dispatched  # A holds 2 = its share of 4 while B is active: the free slot waits for B
    b2 = q.offer("B")
    assert b2.dispatched  # B finds it at once, although A was queued first
    clock.t = 10  # B idle past the window: A may take everything again
    for w in (b1, b2):
        q.release(w)
    assert queued_a.dispatched


async def test_dispatch_racing_the_ttl_keeps_the_slot_accounted():
    ctl = FlowController(FlowQueue(lambda: 1, FlowPolicy(ttl_s=0.05, fair_share=False)))
    held = await ctl.acquire("A")
    waiter = asyncio.ensure_future(ctl.acquire("A"))
    await asyncio.sleep(0)
    ctl.queue.release(held)  # the core dispatches the waiter, but its wake-up has not run when the TTL fires
    got = await waiter  # dispatched: it goes, not a 503 that would leak its slot
    assert got.dispatched and ctl.queue.in_flight == 1
    ctl.release(got)
    assert ctl.queue.in_flight == 0 and ctl.queue.depth() == {}


def test_a_flooding_tenant_fills_only_its_share_of_the_band():
    clock = Clock()
    q = FlowQueue(lambda: 1, FlowPolicy(per_band_capacity=4), clock)
    q.offer("B")  # B is active (and holds the one slot)
    q.offer("A")
    q.offer("A")
    with pytest.raises(RateLimited) as exc:
        q.offer("A")
    assert exc.value.headers["x-llmd-drop-reason"] == "tenant_queue_full"
    assert not q.offer("B").dispatched  # B still finds room in the band


def test_headroom_keeps_a_slot_for_a_tenant_holding_none():
    clock = Clock()
    q = FlowQueue(lambda: 4, FlowPolicy(), clock)  # headroom 1
    flood = [q.offer("flood") for _ in range(6)]
    assert [w.dispatched for w in flood] == [True] * 3 + [False] * 3  # alone, at most capacity - 1
    vip = [q.offer("vip", priority=9) for _ in range(2)]
    assert vip[0].dispatched and not vip[1].dispatched  # the kept slot, at once; then vip holds one too
    low = q.offer("late", priority=0)
    assert not low.dispatched and q.in_flight == 4
    assert q.release(vip[0]) == [vip[1]]  # the highest band first; vip holds none again, so it may use it
    assert q.release(flood[0]) == [low]  # late holds none: the kept slot is its, not flood's
    assert q.release(flood[1]) == []  # flood holds 1, 3 in flight = capacity - headroom: the slot stays free
    assert q.release(vip[1]) == [flood[3]]
    one = FlowQueue(lambda: 1, FlowPolicy(headroom=3), clock)
    assert one.offer("a").dispatched  # capacity below the headroom: a tenant holding none still gets a slot


def test_max_concurrency_counts_the_key_not_its_tenant():
    clock = Clock()
    q = FlowQueue(lambda: 10, FlowPolicy(headroom=0), clock)
    bulk = [q.offer("shared", key="s2") for _ in range(3)]
    assert all(w.dispatched for w in bulk)
    mine = q.offer("shared", max_concurrency=1, key="s1")
    assert mine.dispatched  # s2's requests do not count against s1
    capped = q.offer("shared", max_concurrency=1, key="s1")
    sibling = q.offer("shared", key="s2")
    assert not capped.dispatched and sibling.dispatched  # s1's queued request blocks no other key of its tenant
    assert q.key_in_flight == {"s2": 4, "s1": 1} and q.tenant_in_flight == {"shared": 5}
    assert q.release(bulk[0]) == []  # a slot of s2: s1 still at its limit
    assert q.release(mine) == [capped]
    for w in (*bulk[1:], sibling, capped):
        q.release(w)
    assert q.key_in_flight == {} and q.tenant_in_flight == {} and q.in_flight == 0


def test_without_flow_control_a_key_over_its_limit_is_refused():
    q = FlowQueue(lambda: 1 << 62, FlowPolicy(fair_share=False, headroom=0, wait_for_key_slot=False), Clock())
    held = [q.offer("t", max_concurrency=2, key="k") for _ in range(2)]
    with pytest.raises(RateLimited) as exc:
        q.offer("t", max_concurrency=2, key="k")
    assert exc.value.status == 429 and exc.value.headers == {"x-llmd-drop-reason": "concurrency", "Retry-After": "1"}
    assert q.offer("t", key="other").dispatched and q.depth() == {}
    q.release(held[0])
    assert q.offer("t", max_concurrency=2, key="k").dispatched
