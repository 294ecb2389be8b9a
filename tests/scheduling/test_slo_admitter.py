"""``latency-slo-admitter`` and ``slo-headroom-tier-filter``: who is shed, who passes, which endpoints are kept."""

from __future__ import annotations

import pytest
from sched_fixtures import endpoint, make_ctx, prompt, request
from test_scheduler import one_profile

from llmd_kserve.config.build import build_scheduler
from llmd_kserve.config.loader import parse_config
from llmd_kserve.scheduling.slo_admitter import SloUnmet
from llmd_kserve.types import Objective

SHED = Objective(-1, ttft_s=0.5)


def admitter(**params):
    cfg = one_profile(("latency-slo-admitter", params or None, None), ("slo-headroom-tier-filter",
                      {"epsilonExploreNeg": 0}, None), ("round-robin-picker", None, None))
    return build_scheduler(parse_config(cfg), make_ctx())


def busy(i: int, waiting: int = 200):
    """An endpoint with ``waiting`` queued requests (512 prompt tokens each): seconds of prefill backlog."""
    return endpoint(i, running=8, waiting=waiting)


def test_a_sheddable_request_no_endpoint_serves_in_time_is_refused_with_a_retry_hint() -> None:
    with pytest.raises(SloUnmet) as err:
        admitter().schedule(request("r", prompt(1, 1000), objective=SHED), [busy(0), busy(1)])
    assert err.value.retry_after_s > 1.0  # seconds of backlog beyond the 0.5 s target
    assert err.value.max_wait_s == 0  # onMiss: reject


def test_priority_zero_no_targets_or_an_endpoint_in_time_pass() -> None:
    sched, eps = admitter(), [busy(0), busy(1)]
    assert sched.schedule(request("a", prompt(1, 1000), objective=Objective(0, ttft_s=0.5)), eps).target
    assert sched.schedule(request("b", prompt(2, 1000), objective=Objective(-1)), eps).target  # no targets
    assert sched.schedule(request("c", prompt(3, 1000)), eps).target  # no objective
    ok = [busy(0), endpoint(1, running=8, waiting=0)]
    assert sched.schedule(request("d", prompt(4, 1000), objective=SHED), ok).target == ok[1].id


def test_an_idle_endpoint_admits_and_the_tpot_target_counts_too() -> None:
    sched = admitter()
    idle = [busy(0), endpoint(1)]  # nothing running or waiting: admitted whatever the prediction
    assert sched.schedule(request("a", prompt(1, 1000), objective=SHED), idle).target
    crowded = [endpoint(i, running=400) for i in range(2)]  # no queue, but a decode batch of 400
    with pytest.raises(SloUnmet):
        sched.schedule(request("b", prompt(2, 1000), objective=Objective(-1, tpot_s=0.02)), crowded)
    assert sched.schedule(request("c", prompt(3, 1000), objective=Objective(-1, tpot_s=1.0)), crowded).target


def test_queue_mode_says_how_long_the_request_may_wait() -> None:
    with pytest.raises(SloUnmet) as err:
        admitter(onMiss="queue", maxWaitS=1.5, pollS=0.1).schedule(
            request("r", prompt(1, 1000), objective=SHED), [busy(0), busy(1)])
    assert (err.value.max_wait_s, err.value.poll_s) == (1.5, 0.1)


def test_the_headroom_filter_keeps_the_endpoints_within_the_target() -> None:
    sched = admitter()
    eps = [busy(0), busy(1), endpoint(2, running=8, waiting=1)]
    res = sched.schedule(request("a", prompt(1, 1000), objective=Objective(0, ttft_s=0.5)), eps)
    assert set(res.totals) == {eps[2].id}
    res = sched.schedule(request("b", prompt(2, 1000)), eps)  # no targets: every endpoint stays
    assert set(res.totals) == {e.id for e in eps}


def test_exploration_keeps_the_tier_that_misses() -> None:
    cfg = one_profile(("slo-headroom-tier-filter", {"epsilonExploreNeg": 1.0}, None),
                      ("round-robin-picker", None, None))
    sched = build_scheduler(parse_config(cfg), make_ctx())
    eps = [busy(0), endpoint(1, running=8, waiting=1)]
    res = sched.schedule(request("a", prompt(1, 1000), objective=Objective(0, ttft_s=0.5)), eps)
    assert set(res.totals) == {eps[0].id}
