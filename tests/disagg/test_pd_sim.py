"""The virtual-time P/D simulator: the handoff happens, deciders differ as they should, runs are deterministic."""

from __future__ import annotations

import random

from llmd_kserve.bench.workloads import ArrivalSpec, RagSpec, ReasoningSpec, assign_arrivals, build_requests
from llmd_kserve.disagg.sim import PDClusterSim, PDSimOptions

PD = ("prefill", "decode")


def _reqs(spec, n=12, rate=4.0):
    rng = random.Random(3)
    return assign_arrivals(build_requests(spec, rng, n), ArrivalSpec(pattern="poisson", rate=rate), rng)


def _run(config, reqs, roles=PD):
    out = PDClusterSim(config, PDSimOptions(roles=roles)).run(reqs)
    assert len(out.results) == len(reqs) and all(r.ok for r in out.results)
    return out


def test_always_hands_every_request_over_and_never_none():
    reqs = _reqs(RagSpec(num_requests=12, num_documents=8, document_len=256, output_len=16))
    always, never = _run("pd-always", reqs), _run("pd-never", reqs)
    assert always.engine_counters["disaggregated"] == 12 and always.engine_counters["kv_transfer_s"] > 0
    assert {r.extra["prefill"] for r in always.results} == {"http://sim-prefill-0:8000"}
    assert {r.endpoint for r in always.results} == {"http://sim-decode-1:8000"}
    assert never.engine_counters["disaggregated"] == 0
    assert all(r.output_tokens == 16 for r in always.results + never.results)
    # the remote prefill adds a hop and a transfer: an idle cluster answers sooner locally
    assert sum(r.ttft for r in always.results) > sum(r.ttft for r in never.results)


def test_short_prompts_stay_local_under_predicted_ttft():
    reqs = _reqs(ReasoningSpec(num_requests=8, output_len_min=20, output_len_max=40))
    assert _run("pd-predicted-ttft", reqs).engine_counters["disaggregated"] == 0


def test_deterministic():
    reqs = _reqs(RagSpec(num_requests=10, num_documents=8, document_len=256, output_len=8))
    a, b = _run("pd-predicted-ttft", reqs), _run("pd-predicted-ttft", reqs)
    assert [(r.request_id, r.ttft, r.e2e, r.endpoint) for r in a.results] == \
        [(r.request_id, r.ttft, r.e2e, r.endpoint) for r in b.results]
