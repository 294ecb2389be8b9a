"""``latency-slo-admitter`` in the simulator: under a burst, sheddable requests are shed (429) or held back and
then shed, priority-0 requests are all served, and every request ends (the hold loop terminates)."""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

import llmd_kserve.config
from llmd_kserve.bench.workloads import ArrivalSpec, SharedPrefixSpec, make_workload
from llmd_kserve.cluster_sim import ClusterSim, SimOptions
from llmd_kserve.types import Objective

SPEC = SharedPrefixSpec(num_groups=16, prompts_per_group=16, system_prompt_len=3000, question_len=64, output_len=16)


def _config(tmp_path: Path, **admitter) -> Path:
    doc = yaml.safe_load((Path(llmd_kserve.config.__file__).parent / "shipped" / "default.yaml").read_text())
    for p in doc["plugins"]:
        if p["type"] == "latency-slo-admitter":
            p["parameters"] |= admitter
    out = tmp_path / "c.yaml"
    out.write_text(yaml.safe_dump(doc))
    return out


@pytest.mark.parametrize("admitter", [{}, {"onMiss": "queue", "maxWaitS": 0.3, "pollS": 0.07}])
def test_a_burst_sheds_sheddable_requests_and_serves_priority_zero(tmp_path, admitter) -> None:
    reqs = make_workload(SPEC, ArrivalSpec(pattern="poisson", rate=2000.0), random.Random(0))
    reqs = [replace(r, objective=Objective(-1 if i % 2 else 0, ttft_s=0.3)) for i, r in enumerate(reqs)]
    run = ClusterSim(_config(tmp_path, **admitter), SimOptions(engines=2)).run(reqs)
    assert len(run.results) == len(reqs)
    by_id = {r.request_id: r for r in run.results}
    keep = [by_id[r.request_id] for r in reqs if r.objective.priority == 0]
    shed = [by_id[r.request_id] for r in reqs if r.objective.priority < 0]
    assert all(r.ok for r in keep)
    refused = [r for r in shed if not r.ok]
    assert refused and all(r.status == 429 and r.shed for r in refused)
    arrival = {r.request_id: r.arrival_s for r in reqs}
    assert all(abs(r.start - arrival[r.request_id]) < 1e-9 for r in run.results)  # held: still from its arrival
