"""The in-flight producer's fluid prefill queue, and the predicted-TTFT model that reads it (``backlog: queue``)."""

from __future__ import annotations

import pytest
from sched_fixtures import endpoint, make_ctx, prompt, request
from test_scheduler import one_profile

from llmd_kserve.config.build import build_scheduler
from llmd_kserve.config.loader import parse_config
from llmd_kserve.latency import load_profile
from llmd_kserve.types import RequestOutcome


def ttft_sched(backlog: str, now: list[float]):
    cfg = one_profile(("predicted-ttft-scorer", {"backlog": backlog}, 1))
    return build_scheduler(parse_config(cfg), make_ctx(clock=lambda: now[0]))


def test_the_queue_holds_a_requests_prefill_time_and_drains_on_the_clock() -> None:
    now = [0.0]
    sched = ttft_sched("queue", now)
    eps = [endpoint(0), endpoint(1)]
    first = sched.schedule(request("a", prompt(1, 4000)), eps)
    producer = next(p for p in sched.producers if p.type == "inflight-load-producer")
    h100 = load_profile("h100-llama8b")
    work = h100.prefill_time(4000) - h100.request_overhead(4000)
    queued = producer.prefill_backlog()
    assert queued == {first.target: pytest.approx(work)}
    now[0] = work / 2
    assert producer.prefill_backlog()[first.target] == pytest.approx(work / 2)
    now[0] = work * 1.01
    assert producer.prefill_backlog() == {}
    assert producer.load(first.target).requests == 1


def test_a_decoding_endpoint_does_not_look_backlogged_with_the_queue_model() -> None:
    """Endpoint 0 got 20 long prompts 30 s ago: their prefills are long done (they are decoding), endpoint 1 got
    nothing. The in-flight model still counts their tokens as backlog; the queue model does not."""
    eps = [endpoint(0), endpoint(1)]
    scores = {}
    for backlog in ("inflight", "queue"):
        now = [0.0]
        sched = ttft_sched(backlog, now)
        for i in range(20):
            sched.schedule(request(f"old{i}", prompt(100 + i, 2000)), [eps[0]])
        now[0] = 30.0
        res = sched.schedule(request("new", prompt(7, 2000)), eps)
        scores[backlog] = res.scores["default/predicted-ttft-scorer"][eps[0].id]
        assert res.target == eps[1].id or backlog == "queue"
    assert scores["inflight"] < 0.2
    assert scores["queue"] == pytest.approx(1.0)  # equally fast: nothing left to prefill on either


def test_the_queue_still_sees_a_fresh_burst_and_the_scraped_waiting_queue() -> None:
    now = [0.0]
    sched = ttft_sched("queue", now)
    eps = [endpoint(0), endpoint(1)]
    targets = [sched.schedule(request(str(i), prompt(i, 3000)), eps).target for i in range(6)]
    assert targets.count(eps[0].id) == targets.count(eps[1].id) == 3  # a burst in one instant alternates
    busy = [endpoint(0, waiting=40), endpoint(1)]
    sched2 = ttft_sched("queue", [0.0])
    assert sched2.schedule(request("w", prompt(9, 500)), busy).target == busy[1].id  # other routers' queue


def test_pd_charges_the_prefill_endpoint_and_completion_keeps_the_queue_consistent() -> None:
    now = [0.0]
    sched = build_scheduler("pd-always", make_ctx(clock=lambda: now[0]))
    eps = [endpoint(0, role="prefill"), endpoint(1, role="decode")]
    req = request("pd", prompt(3, 3000))
    res = sched.schedule(req, eps)
    producer = next(p for p in sched.producers if p.type == "inflight-load-producer")
    assert res.prefill == eps[0].id
    assert set(producer.prefill_backlog()) == {eps[0].id}
    sched.on_complete(req, res, RequestOutcome(ok=True, prompt_tokens=3000))
    assert producer.load(eps[0].id).requests == 0
