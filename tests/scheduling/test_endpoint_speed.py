"""Per-endpoint latency profiles (mixed GPUs): the latency-model plugins time each endpoint with its own profile."""

from __future__ import annotations

import pytest
from sched_fixtures import eid, make_ctx, prompt, request
from test_scheduler import one_profile

from llmd_kserve.config.build import build_scheduler
from llmd_kserve.config.loader import parse_config
from llmd_kserve.latency import load_profile
from llmd_kserve.scheduling.ttft import endpoint_profile
from llmd_kserve.types import PROFILE_LABEL, Endpoint, EndpointMetrics, EndpointState

SLOW = "a100-40g-llama8b-derived"


def labelled(i: int, profile: str | None, **metrics) -> EndpointState:
    labels = {PROFILE_LABEL: profile} if profile else {}
    return EndpointState(Endpoint(eid(i), labels=labels), EndpointMetrics(stale=False, **metrics))


def test_endpoint_profile_follows_the_label_and_falls_back() -> None:
    default = load_profile("h100-llama8b")
    assert endpoint_profile(labelled(0, None).endpoint, default) is default
    assert endpoint_profile(labelled(0, SLOW).endpoint, default).name == SLOW
    assert endpoint_profile(labelled(0, "no-such-profile").endpoint, default) is default


def test_predicted_ttft_times_each_endpoint_with_its_own_profile(index) -> None:
    sched = build_scheduler(parse_config(one_profile(("predicted-ttft-scorer", None, 1))), make_ctx(index))
    eps = [labelled(0, SLOW), labelled(1, None), labelled(2, "no-such-profile")]
    res = sched.schedule(request("r", prompt(1, 3000)), eps)
    scores = res.scores["default/predicted-ttft-scorer"]
    assert res.target != eps[0].endpoint.id
    assert scores[eps[1].endpoint.id] == scores[eps[2].endpoint.id] == 1.0  # unknown name: the router's profile
    slow, fast = load_profile(SLOW).prefill_time(3000), load_profile("h100-llama8b").prefill_time(3000)
    assert scores[eps[0].endpoint.id] == pytest.approx(fast / slow)  # ~1/3: the derived A100 prefills slower


def test_a_slow_endpoints_backlog_counts_at_its_speed(index) -> None:
    sched = build_scheduler(parse_config(one_profile(("predicted-ttft-scorer", None, 1))), make_ctx(index))
    # the same 8-request queue on both: the slow one is predicted to drain it ~3x slower
    eps = [labelled(0, SLOW, waiting=8), labelled(1, None, waiting=8)]
    res = sched.schedule(request("r", prompt(2, 512)), eps)
    assert res.target == eps[1].endpoint.id
    assert res.scores["default/predicted-ttft-scorer"][eps[0].endpoint.id] < 0.5
