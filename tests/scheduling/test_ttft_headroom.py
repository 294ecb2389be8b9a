"""Each decision reports the best candidate's predicted TTFT headroom against the deployment's target (the
autoscaling signal): none without a target, smaller when every endpoint has a backlog, negative past the target,
and at most one measured decision per sampling interval."""

from __future__ import annotations

import dataclasses

from llmd_kserve.config.build import build_scheduler
from llmd_kserve.kvcache.index import KVIndex
from llmd_kserve.scheduling.ttft_headroom import SAMPLE_INTERVAL_S
from tests.scheduling.sched_fixtures import endpoint, make_ctx, prompt, request


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_headroom_per_decision_against_the_target():
    clock = Clock()
    ctx = dataclasses.replace(make_ctx(KVIndex(max_keys=10_000), clock=clock), ttft_target_s=1.0)
    sched = build_scheduler("default", ctx)
    idle = [endpoint(1), endpoint(2)]
    assert build_scheduler("default", make_ctx(KVIndex(max_keys=10_000))).schedule(
        request("r0", prompt(0, 512)), idle).ttft_headroom_s is None  # no target: not computed
    light = sched.schedule(request("r1", prompt(1, 512)), idle).ttft_headroom_s
    assert light is not None and 0 < light < 1.0  # the prompt's own prefill, predicted
    assert sched.schedule(request("r2", prompt(2, 512)), idle).ttft_headroom_s is None  # same sampling interval
    clock.t += SAMPLE_INTERVAL_S
    # every endpoint has work waiting: the best one's backlog counts
    busy = [endpoint(1, waiting=8, running=30), endpoint(2, waiting=4, running=30)]
    some = sched.schedule(request("r3", prompt(3, 512)), busy).ttft_headroom_s
    assert some is not None and some < light
    clock.t += SAMPLE_INTERVAL_S
    swamped = [endpoint(1, waiting=400, running=60), endpoint(2, waiting=300, running=60)]
    worst = sched.schedule(request("r4", prompt(4, 512)), swamped).ttft_headroom_s
    assert worst is not None and worst < 0  # no endpoint is predicted to meet the target
