"""Scaling policies on the router's signals: KEDA's formula and stabilization window, our headroom policy's
scale-up, cooldown and hysteresis, static N."""

from __future__ import annotations

import pytest

from llmd_kserve.cluster_sim.scaling import (
    HeadroomPolicy,
    KedaQueuePolicy,
    RouterSignals,
    ScalingPolicy,
    StaticPolicy,
    make_policy,
)


def sig(t: float = 0.0, replicas: int = 4, *, ready: int | None = None, queued: int = 0,
        headroom: float | None = 1.5, kv: float = 0.3, miss: float | None = None) -> RouterSignals:
    return RouterSignals(t=t, replicas=replicas, ready=replicas if ready is None else ready,
                         queue_depth={0: queued}, ttft_headroom_s=headroom, kv_usage=kv, slo_miss_ratio=miss)


def test_every_policy_is_a_scaling_policy() -> None:
    for name in ("headroom", "keda-queue", "static"):
        assert isinstance(make_policy(name, replicas=3), ScalingPolicy)
    assert StaticPolicy(3).desired(sig(queued=100, headroom=-5)) == 3


# --- KEDA ---------------------------------------------------------------------------------------------------------
def test_keda_desired_is_ceil_of_metric_over_target() -> None:
    keda = KedaQueuePolicy(target=2.0)
    assert keda.desired(sig(0, 2, queued=7)) == 4  # ceil(7 / 2)
    assert keda.desired(sig(15, 4, queued=17)) == 8  # ceil(8.5) = 9, capped at HPA's max(2 x 4, 4 + 4) = 8


def test_keda_keeps_the_count_within_hpa_tolerance() -> None:
    keda = KedaQueuePolicy(target=2.0)
    assert keda.desired(sig(0, 10, queued=21)) == 10  # ceil(10.5) = 11: 11 / 10 - 1 = 10% <= tolerance
    assert keda.desired(sig(15, 10, queued=23)) == 12  # 12 / 10 - 1 = 20%


def test_keda_scales_down_only_after_the_stabilization_window() -> None:
    keda = KedaQueuePolicy(target=2.0, stabilization_s=300.0)
    assert keda.desired(sig(0, 6, queued=0)) == 6  # the running count stood through the last window
    for t in (30, 120, 299):
        assert keda.desired(sig(t, 6, queued=0)) == 6
    assert keda.desired(sig(301, 6, queued=0)) == 0  # every recommendation of the window says 0 (min clamps it)


def test_keda_scale_down_takes_the_windows_highest_recommendation() -> None:
    keda = KedaQueuePolicy(target=1.0, stabilization_s=100.0)
    assert keda.desired(sig(0, 2, queued=5)) == 5  # up at once (HPA's cap max(2 x 2, 2 + 4) = 6 allows it)
    assert keda.desired(sig(10, 5, queued=5)) == 5
    assert keda.desired(sig(50, 5, queued=1)) == 5  # the window still holds 5
    assert keda.desired(sig(111, 5, queued=1)) == 1  # 0 and 10 left the window; 50's and 111's say 1


def test_keda_target_must_be_positive() -> None:
    with pytest.raises(ValueError):
        KedaQueuePolicy(target=0)


# --- ours ---------------------------------------------------------------------------------------------------------
def test_headroom_scales_up_at_once_on_negative_headroom() -> None:
    p = HeadroomPolicy(2.0, cooldown_s=60)
    assert p.desired(sig(0, 4, headroom=1.0)) == 4
    assert p.desired(sig(15, 4, headroom=-0.2)) == 5


def test_headroom_scales_up_for_the_queue_counting_starting_replicas() -> None:
    p = HeadroomPolicy(2.0, queue_per_replica=8)
    assert p.desired(sig(0, 4, queued=20)) == 7  # 3 more for 20 queued
    assert p.desired(sig(15, 7, ready=4, queued=20)) == 7  # those 3 are starting: nothing more
    assert p.desired(sig(30, 7, ready=4, queued=40)) == 9  # the queue grew: 5 needed over the 4 ready
    assert p.desired(sig(45, 2, queued=400)) == 4  # at most doubling


def test_headroom_scales_up_when_kv_is_nearly_full() -> None:
    p = HeadroomPolicy(2.0, kv_high=0.85, kv_low=0.6)
    assert p.desired(sig(0, 4, kv=0.95)) == 7  # 3.8 replicas of KV over 0.6 each


def test_headroom_scales_down_only_after_the_cooldown() -> None:
    p = HeadroomPolicy(2.0, cooldown_s=120, kv_low=0.6)
    assert p.desired(sig(0, 8, kv=0.2)) == 8
    assert p.desired(sig(60, 8, kv=0.2)) == 8
    assert p.desired(sig(119, 8, kv=0.2)) == 8
    assert p.desired(sig(120, 8, kv=0.2)) == 7  # one at a time
    assert p.desired(sig(135, 7, kv=0.2)) == 7  # a new cooldown starts at the change
    assert p.desired(sig(240, 7, kv=0.2)) == 7
    assert p.desired(sig(255, 7, kv=0.2)) == 6


def test_headroom_does_not_probe_a_count_that_failed_lately() -> None:
    p = HeadroomPolicy(2.0, cooldown_s=30, memory_s=300)
    assert p.desired(sig(0, 6, miss=0.4)) == 7  # 6 replicas missed targets
    for t in range(15, 300, 15):
        assert p.desired(sig(t, 7, kv=0.2, miss=0.0)) == 7  # 6 failed at t=0: not tried again
    assert p.desired(sig(315, 7, kv=0.2, miss=0.0)) == 6  # its memory has faded


def test_headroom_calm_is_broken_by_pressure_or_low_headroom() -> None:
    p = HeadroomPolicy(2.0, cooldown_s=100, down_headroom=0.5)
    assert p.desired(sig(0, 6, kv=0.1)) == 6
    assert p.desired(sig(90, 6, kv=0.1, headroom=0.5)) == 6  # headroom below 0.5 x 2 s: not calm
    assert p.desired(sig(150, 6, kv=0.1)) == 6  # calm again since 150, not since 0
    assert p.desired(sig(250, 6, kv=0.1)) == 5


def test_headroom_scales_up_on_missed_targets_unless_replicas_are_on_their_way() -> None:
    p = HeadroomPolicy(2.0, miss_high=0.05)
    assert p.desired(sig(0, 6, miss=0.04)) == 6  # within the bar
    assert p.desired(sig(3, 6, miss=0.3)) == 7
    assert p.desired(sig(6, 7, ready=6, miss=0.3)) == 7  # one is starting: wait for it


def test_headroom_does_not_scale_down_while_targets_are_missed() -> None:
    p = HeadroomPolicy(2.0, cooldown_s=30, miss_low=0.01, miss_high=0.05)
    for t in range(0, 300, 15):
        assert p.desired(sig(t, 8, kv=0.1, miss=0.03)) == 8  # between the levels: neither up nor down
    assert p.desired(sig(300, 8, kv=0.1, miss=0.0)) == 8  # calm starts now
    assert p.desired(sig(330, 8, kv=0.1, miss=0.0)) == 7


def test_headroom_hysteresis_holds_between_the_levels() -> None:
    p = HeadroomPolicy(2.0, cooldown_s=30, kv_low=0.6, kv_high=0.85)
    for t in range(0, 600, 15):  # KV at 0.7: too full to shed one (0.7 x 6 / 5 = 0.84 >= 0.6), not full enough to add
        assert p.desired(sig(t, 6, kv=0.7, headroom=1.2)) == 6


def test_headroom_parameters_are_checked() -> None:
    with pytest.raises(ValueError):
        HeadroomPolicy(kv_low=0.9, kv_high=0.8)
    with pytest.raises(ValueError):
        HeadroomPolicy(up_headroom=0.5, down_headroom=0.5)
    with pytest.raises(ValueError):
        make_policy("nope", replicas=1)
