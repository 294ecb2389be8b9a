"""ClusterSim with P/D roles: the handoff happens, deciders differ as they should, fallback, determinism."""

from __future__ import annotations

import json
import random

from llmd_kserve.bench.workloads import ArrivalSpec, RagSpec, ReasoningSpec, assign_arrivals, build_requests
from llmd_kserve.cli import main
from llmd_kserve.cluster_sim import ClusterSim, SimOptions, pd_roles

PD = pd_roles(prefill=1, decode=1)


def _reqs(spec, n=12, rate=4.0):
    rng = random.Random(3)
    return assign_arrivals(build_requests(spec, rng, n), ArrivalSpec(pattern="poisson", rate=rate), rng)


def _run(config, reqs, roles=PD):
    out = ClusterSim(config, SimOptions(roles=roles)).run(reqs)
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


def _inflight(sim: ClusterSim):
    return next(p for p in sim.scheduler.producers if p.type == "inflight-load-producer")


def test_handoff_releases_every_charge_and_every_held_block():
    reqs = _reqs(RagSpec(num_requests=12, num_documents=8, document_len=256, output_len=16))
    sim = ClusterSim("pd-always", SimOptions(roles=PD))
    out = sim.run(reqs)
    assert out.engine_counters["pd_fallbacks"] == 0
    prefill, decode = sim.engines
    assert not prefill.core.held and prefill.core.kv_usage == 0  # every decode leg pulled (released) its KV
    assert all(_inflight(sim).load(e.id) == (0, 0) for e in sim.engines)
    # the decode engine reports the transferred prefix as cached, like vLLM with a KV connector
    assert all(r.cached_tokens >= r.prompt_tokens - 16 for r in out.results)


def test_vllm_032_engines_report_the_prefill_engines_cached_tokens():
    """vLLM 0.32 (the ``cpu-tiny-llama`` profile's rules): the decode reports the prefill's own prefix-cache hit
    (``remote_prefill_cached_tokens``), not the KV it pulled."""
    reqs = _reqs(RagSpec(num_requests=12, num_documents=8, document_len=256, output_len=8))
    sim = ClusterSim("pd-always", SimOptions(roles=PD, profile="cpu-tiny-llama"))
    out = sim.run(reqs)
    assert all(r.ok for r in out.results) and out.engine_counters["disaggregated"] == 12
    prefill = sim.engines[0].core
    assert prefill.vllm_version == "0.32" and prefill.stats.num_preemptions == 0
    reported = sum(r.cached_tokens for r in out.results)
    assert reported == prefill.stats.prefix_hits == prefill.stats.prompt_tokens_local_hit > 0
    assert reported < sum(r.prompt_tokens for r in out.results) - 12 * 32  # not the whole prompt


def test_prefill_timeout_falls_back_to_a_local_prefill():
    reqs = _reqs(RagSpec(num_documents=8, document_len=256, output_len=8), n=8)
    sim = ClusterSim("pd-always", SimOptions(roles=PD, prefill_timeout_s=1e-4))
    out = sim.run(reqs)
    assert all(r.ok and r.output_tokens == 8 for r in out.results)
    assert out.engine_counters["pd_fallbacks"] == 8 and out.engine_counters["disaggregated"] == 0
    assert {r.extra["pd_fallback"] for r in out.results} == {"timeout"}
    assert {r.extra["prefill"] for r in out.results} == {None}
    prefill = sim.engines[0].core
    assert not prefill.has_work() and not prefill.held and prefill.kv_usage == 0  # the legs were aborted
    assert all(_inflight(sim).load(e.id) == (0, 0) for e in sim.engines)


def test_prefill_refused_falls_back_and_is_counted():
    reqs = _reqs(RagSpec(num_documents=8, document_len=256, output_len=8), n=6)
    sim = ClusterSim("pd-always", SimOptions(roles=PD))
    sim.engines[0].core.max_model_len = 64  # the prefill replica refuses these prompts (HTTP 400 live)
    out = sim.run(reqs)
    assert all(r.ok for r in out.results) and {r.endpoint for r in out.results} == {"http://sim-decode-1:8000"}
    assert out.engine_counters["pd_fallbacks"] == 6
    assert {r.extra["pd_fallback"] for r in out.results} == {"http_400"}
    never = _run("pd-never", reqs)  # the same local prefill on the decode engine, without the failed hop first
    assert all(a.ttft > b.ttft for a, b in zip(out.results, never.results, strict=True))


def test_closed_loop_with_roles():
    reqs = _reqs(RagSpec(num_documents=8, document_len=256, output_len=8), n=10)
    out = ClusterSim("pd-predicted-ttft", SimOptions(roles=pd_roles(prefill=1, decode=2))).run(reqs, concurrency=3)
    assert len(out.results) == 10 and all(r.ok for r in out.results)
    assert sorted(r.start for r in out.results)[:3] == [0.0] * 3


def test_roles_set_the_engine_count_and_names():
    opts = SimOptions(engines=8, roles=pd_roles(prefill=2, decode=1))
    assert opts.engines == 3
    sim = ClusterSim("pd-never", opts)
    assert [e.id for e in sim.engines] == ["http://sim-prefill-0:8000", "http://sim-prefill-1:8000",
                                           "http://sim-decode-2:8000"]
    assert [e.endpoint.role for e in sim.engines] == ["prefill", "prefill", "decode"]


def test_bench_sim_with_prefill_and_decode(tmp_path, capsys):
    out = tmp_path / "pd.json"
    argv = ["bench", "--sim", "--prefill", "1", "--decode", "2", "--workload", "rag", "--num-requests", "12",
            "--rate", "8", "--json", str(out)]
    assert main(argv) == 0
    report = json.loads(out.read_text())
    assert report["workload"] | {"mode": "sim", "engines": 3, "prefill": 1, "decode": 2} == report["workload"]
    (run,) = report["runs"]
    assert run["policy"] == "pd-predicted-ttft" and run["summary"]["n"] == 12 and run["summary"]["errors"] == 0
    assert {r["endpoint"] for r in run["requests"]} <= {"http://sim-decode-1:8000", "http://sim-decode-2:8000"}
    assert run["engine_counters"]["disaggregated"] > 0
    assert main(["bench", "--prefill", "1", "--decode", "1", "--target", "http://127.0.0.1:9"]) == 2
    assert "need --sim" in capsys.readouterr().err
