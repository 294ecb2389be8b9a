"""The monotone searches find the known minimum, with fewer runs than trying every count."""

from __future__ import annotations

import math

import pytest

from llmd_kserve.plan import Deployment, pd_frontier, smallest
from llmd_kserve.plan.search import Evaluation, per_form_best


class Counting:
    def __init__(self, test):
        self.test, self.calls = test, []

    def __call__(self, *args):
        self.calls.append(args)
        return self.test(*args)


@pytest.mark.parametrize("need", [1, 2, 3, 5, 8, 13, 31, 32])
@pytest.mark.parametrize("start", [None, 4, 20])
def test_smallest_finds_the_threshold_of_a_monotone_test(need, start):
    t = Counting(lambda n: n >= need)
    assert smallest(t, 1, 32, start) == need
    assert len(t.calls) <= 2 * math.ceil(math.log2(32)) + 2  # galloping + bisection, not 32 runs
    assert len(set(t.calls)) == len(t.calls)  # never the same count twice


def test_smallest_says_none_when_nothing_in_range_passes():
    t = Counting(lambda n: n >= 40)
    assert smallest(t, 1, 32) is None
    assert t.calls[-1] == (32,)  # it tried the upper bound before giving up


def test_pd_frontier_walks_the_staircase_to_the_cheapest_split():
    # monotone in both counts: decode replicas also absorb a little prefill (10 per prefill, 2 per decode replica)
    def ok(p, d):
        return 10 * p + 2 * d >= 30 and 7 * d >= 20

    grid = [(p, d) for p in range(1, 12) for d in range(1, 12) if p + d <= 12 and ok(p, d)]
    best = min(p + d for p, d in grid)
    t = Counting(ok)
    front = pd_frontier(t, 12, cap=lambda: 12)
    assert min(p + d for p, d in front) == best == 6
    assert (3, 3) in front
    assert len(t.calls) < len(grid)  # far fewer runs than the grid


def test_pd_frontier_stops_once_no_split_can_tie_the_cap():
    t = Counting(lambda p, d: p >= 1 and d >= 2)
    front = pd_frontier(t, 16, cap=lambda: 4)
    assert front[0] == (1, 2) and all(p + 1 <= 4 for p, _ in front)
    assert max(p for p, _ in t.calls) <= 3


def _ev(config, p, d, att, meets=True):
    return Evaluation(Deployment(config, p, d), 10.0, float(p + d), att, meets, 0.1)


def test_options_keep_the_best_of_each_form_cheapest_first():
    evs = [_ev("default", 0, 3, 0.99), _ev("default", 0, 4, 1.0), _ev("default", 0, 2, 0.5, False),
           _ev("pd-predicted-ttft", 1, 2, 0.97), _ev("pd-predicted-ttft", 2, 4, 0.99),
           _ev("pd-predicted-ttft", 1, 3, 1.0)]
    opts = per_form_best(evs)
    assert [(e.deployment.label, e.gpus) for e in opts] == [
        ("3 replicas (default)", 3.0), ("1P + 2D (pd-predicted-ttft)", 3.0),  # 2P + 4D is the 1:2 form too
        ("1P + 3D (pd-predicted-ttft)", 4.0)]
    assert opts[0].attainment > opts[1].attainment  # a tie on GPUs goes to the higher attainment


def test_deployment_values():
    d = Deployment("pd-predicted-ttft", 2, 4)
    assert (d.mode, d.replicas, d.ratio, d.shape) == ("pd", 6, "1:2", "2P + 4D")
    assert Deployment("default", 0, 3).ratio is None and Deployment("default", 0, 3).mode == "aggregated"
