"""Stall detection without a transport: budgets follow the latency profile's prediction (and its floor), a budget
that runs out marks the endpoint suspect and interrupts the attempts waiting on it, the director skips suspects
(never all of them), a busy endpoint that answers others is not marked, and only a real one-token probe clears it."""

from __future__ import annotations

import asyncio
import json

from llmd_kserve.control.director import Director
from llmd_kserve.control.runtime import Runtime
from llmd_kserve.control.settings import RouterSettings
from llmd_kserve.control.stalls import StallPolicy, StallWatch
from llmd_kserve.engine_sim.server import running_engine
from llmd_kserve.latency import load_profile
from llmd_kserve.types import Endpoint, EndpointId, EndpointMetrics, EndpointState
from tests.control.engines import lean_call

EPS = ["http://10.0.0.1:8000", "http://10.0.0.2:8000"]
STATE = EndpointState(Endpoint(EndpointId(EPS[0])), EndpointMetrics(stale=False))


def _director(**settings) -> Director:
    return Director(Runtime.build(RouterSettings(config="load-only", **settings), EPS))


def _ticket(d: Director, prompt: str = "hello there", stream: bool = False):
    raw = json.dumps({"model": "m", "prompt": prompt, "max_tokens": 4, "stream": stream}).encode()
    return d.prepare({}, raw, "completion", "127.0.0.1", d.authenticate({}))


async def _until(check, limit: int = 200) -> None:
    for _ in range(limit):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition never held")


async def test_budget_is_the_predicted_time_times_the_factor_never_under_the_floor() -> None:
    watch = StallWatch(StallPolicy(factor=10.0, floor_s=2.0), load_profile("h100-llama8b"))
    short = watch.begin(STATE, 16, 0, 4, stream=True)
    long = watch.begin(STATE, 60_000, 0, 4, stream=True)
    whole = watch.begin(STATE, 60_000, 0, 2000, stream=False)
    assert short and long and whole
    assert short.budget_s == 2.0 and short.predicted_s * 10 < 2.0
    assert long.budget_s == 10 * long.predicted_s > 2.0
    # an answer that is not streamed comes whole: its decode is in the budget; attempts already waiting add theirs
    assert whole.predicted_s > long.predicted_s + short.predicted_s
    for w in (short, long, whole):
        watch.end(w)
    assert not watch.suspect


async def test_a_stalled_attempt_makes_its_endpoint_suspect_and_interrupts_the_others_on_it() -> None:
    d = _director(stall_factor=1.0, stall_floor_s=0.05)
    a, b = _ticket(d), _ticket(d, "another prompt")
    first = d.schedule(a)
    d.schedule(b, exclude=[e for e in EPS if e != first.target])  # same endpoint
    interrupted: list[str] = []
    assert a.placement and a.placement.watch and b.placement and b.placement.watch
    b.placement.watch.interrupt = lambda: interrupted.append("b")
    await _until(lambda: first.target in d.rt.stalls.suspect)
    assert interrupted == ["b"] and b.placement.watch.stalled
    assert d.rt.stalls.stalls[first.target] == 1  # one stall found; the other attempt was interrupted by it
    # new requests go to the other endpoint; with every endpoint suspect, none is skipped
    other = next(e for e in EPS if e != first.target)
    for _ in range(4):
        t = _ticket(d, "x")
        assert d.schedule(t).target == other
        d.settle(t, 200)
    d.rt.stalls.suspect[EndpointId(other)] = 0.0
    t = _ticket(d, "y")
    assert d.schedule(t).target in EPS
    for t2 in (a, b, t):
        d.settle(t2, 504)
    assert not any(d.rt.stalls._waiting.values())


async def test_an_endpoint_answering_other_requests_is_busy_not_stalled() -> None:
    d = _director(stall_factor=1.0, stall_floor_s=1.0)
    slow = _ticket(d)
    target = d.schedule(slow).target
    stalls = d.rt.stalls
    for _ in range(4):  # others on the same endpoint get their first bytes while ``slow`` waits past its budget
        t = _ticket(d, "quick")
        d.schedule(t, exclude=[e for e in EPS if e != target])
        await asyncio.sleep(0.3)
        d.first_byte(t)
        d.settle(t, 200)
    assert target not in stalls.suspect
    await _until(lambda: target in stalls.suspect, 300)  # then nothing more from it: a stall
    d.settle(slow, 504)


async def test_only_an_answered_probe_clears_a_suspect_and_a_hung_engine_still_answers_health() -> None:
    async with running_engine(time_scale=0.05) as good, running_engine(time_scale=0.05) as hung:
        hung.hang()
        watch = StallWatch(StallPolicy(probe_timeout_s=0.5), load_profile("h100-llama8b"))
        for eng in (good, hung):
            watch.suspect[EndpointId(eng.url)] = 0.0
        with lean_call() as call:
            status, _ = await call(hung.url, "/health", None, 2.0)
            assert status == 200
            assert not await watch.probe(call, EndpointId(hung.url), "llama-8b-shape")
            assert await watch.probe(call, EndpointId(good.url), "llama-8b-shape")
        assert list(watch.suspect) == [hung.url]


async def test_an_attempt_waits_behind_the_predicted_time_of_those_still_waiting() -> None:
    watch = StallWatch(StallPolicy(), load_profile("h100-llama8b"))
    alone = watch.begin(STATE, 100, 0, 4, True)
    second = watch.begin(STATE, 100, 0, 4, True)
    assert alone is not None and second is not None
    assert abs(second.predicted_s - 2 * alone.predicted_s) < 1e-12  # behind the first one
    third = watch.begin(STATE, 100, 0, 4, True)
    assert third is not None and abs(third.predicted_s - (2 * alone.predicted_s + second.predicted_s)) < 1e-12
    watch.first_byte(alone)
    watch.first_byte(alone)  # twice: counted once
    fourth = watch.begin(STATE, 100, 0, 4, True)
    assert fourth is not None
    assert abs(fourth.predicted_s - (alone.predicted_s + second.predicted_s + third.predicted_s)) < 1e-12
    for w in (second, third, fourth):
        watch.end(w)
    again = watch.begin(STATE, 100, 0, 4, True)
    assert again is not None and again.predicted_s == alone.predicted_s  # none waiting: nothing added
    watch.end(again)
