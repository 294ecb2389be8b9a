"""Replicas time-sharing one accelerator: processor sharing in SharedAccelerators and in ClusterSim."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from llmd_kserve.bench.workloads import ArrivalSpec, SharedPrefixSpec, make_workload
from llmd_kserve.cluster_sim import SimOptions, simulate
from llmd_kserve.cluster_sim.accelerator import SharedAccelerators


def test_processor_sharing_timeline():
    acc = SharedAccelerators([0, 0, 1])
    assert acc.start(0, 0.0, 1.0) == [(0, 1.0)]
    # at 0.5 replica 0 has 0.5 s of work left; from now on both run at half speed
    assert sorted(acc.start(1, 0.5, 1.0)) == [(0, 1.5), (1, 2.5)]
    assert not acc.is_due(0, 1.0) and acc.is_due(0, 1.5)
    assert acc.start(2, 0.5, 1.0) == [(2, 1.5)]  # another accelerator: unaffected
    assert acc.finish(0, 1.5) == [(1, 2.0)]  # 0.5 s left for replica 1, alone again
    assert acc.finish(1, 2.0) == [] and not acc.is_due(1, 2.0)


def _burst(n: int):
    spec = SharedPrefixSpec(num_groups=n, prompts_per_group=1, system_prompt_len=512, question_len=32, output_len=4)
    reqs = make_workload(spec, ArrivalSpec(pattern="poisson", rate=1.0), random.Random(0))
    return [replace(r, arrival_s=0.0) for r in reqs]


def test_cluster_sim_replicas_on_one_gpu_slow_each_other_down():
    reqs = _burst(2)
    base = SimOptions(engines=2, frontend_overhead=False, router_delay=0.0)
    own = simulate(reqs, "round-robin", base)
    split = simulate(reqs, "round-robin", replace(base, accelerators=(0, 1)))
    shared = simulate(reqs, "round-robin", replace(base, accelerators=(0, 0)))
    ttft = {name: sorted(r.ttft for r in run.results) for name, run in (("own", own), ("split", split),
                                                                         ("shared", shared))}
    assert ttft["split"] == ttft["own"]
    assert ttft["shared"] == pytest.approx([2 * t for t in ttft["own"]])  # both prefills at once, at half speed
    assert all(r.ok for r in shared.results) and len({r.endpoint for r in shared.results}) == 2


def test_accelerators_must_name_every_engine():
    with pytest.raises(ValueError, match="accelerators"):
        SimOptions(engines=3, accelerators=(0, 0))
