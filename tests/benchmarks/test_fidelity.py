"""benchmarks/fidelity.py: the same requests through virtual-time cores and HTTP engines measure the same thing."""

from __future__ import annotations

import asyncio
import sys
from dataclasses import replace
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import fidelity  # noqa: E402
from fidelity_run import Router, Target, run_target  # noqa: E402

from llmd_kserve.bench.workloads import SharedPrefixSpec  # noqa: E402
from llmd_kserve.latency import load_profile  # noqa: E402

SMALL = SharedPrefixSpec(num_groups=3, prompts_per_group=1, system_prompt_len=96, question_len=20, output_len=3)


def _requests(n: int = 9, gap: float = 0.25):
    # spaced out so no two requests overlap: then the engine counters cannot depend on timing
    reqs = fidelity.pressure_requests(7, 10.0, n, SMALL)
    return [replace(r, arrival_s=i * gap) for i, r in enumerate(reqs)]


def test_virtual_and_http_engines_agree_on_the_counters():
    reqs = _requests()
    virt = asyncio.run(run_target(Target("v", "sim", ("40", "40")), "affinity", reqs, "h100-llama8b"))
    http = asyncio.run(run_target(Target("h", "http-sim", ("40", "40")), "affinity", reqs, "h100-llama8b"))
    for run in (virt, http):
        assert all(r["ok"] for r in run["results"]) and len(run["results"]) == 9
    assert virt["counters"] == http["counters"]
    assert virt["counters"]["prompt_tokens"] == virt["counters"]["queries"] == 9 * 116
    assert virt["counters"]["hits"] > 0
    cached = {r["request_id"]: r["cached_tokens"] for r in virt["results"]}
    assert cached == {r["request_id"]: r["cached_tokens"] for r in http["results"]}
    rows = [fidelity.summarize(r) for r in (virt, http)]
    assert rows[0]["hit_rate_engine"] == rows[1]["hit_rate_engine"] == pytest.approx(rows[0]["hit_rate_usage"])
    text = fidelity.table(rows)
    assert text.count("\n") == 3 and "| v | affinity | 9 | 0 |" in text and "| h | affinity | 9 | 0 |" in text


def test_routing_policies():
    reqs = _requests()
    rr, aff = Router("round-robin", 2), Router("affinity", 2)
    assert [rr.pick(r) for r in reqs] == [i % 2 for i in range(9)]
    picks = {}
    for r in reqs:
        picks.setdefault(r.group, set()).add(aff.pick(r))
    assert all(len(v) == 1 for v in picks.values())  # a group always lands on one replica
    with pytest.raises(ValueError):
        Router("random", 2)


def test_pressure_shows_in_queue_and_hit_rate():
    """Two tiny replicas, requests arriving together: waiting requests queue and round-robin hits less."""
    reqs = [replace(r, arrival_s=0.0) for r in fidelity.pressure_requests(1, 10.0, 12, SMALL)]
    rr = asyncio.run(run_target(Target("v", "sim", ("20", "20")), "round-robin", reqs, "h100-llama8b"))
    aff = asyncio.run(run_target(Target("v", "sim", ("20", "20")), "affinity", reqs, "h100-llama8b"))
    assert rr["queue_max"] > 0 and all(r["ok"] for r in rr["results"] + aff["results"])
    hit = [fidelity.summarize(r)["hit_rate_usage"] for r in (rr, aff)]
    assert hit[1] > hit[0]


def test_pd_pair_over_http():
    reqs = _requests(3)
    run = asyncio.run(run_target(Target("pd", "pd-http-sim", ("40", "40")), "direct", reqs, "h100-llama8b"))
    assert all(r["ok"] and r["ttft"] is not None for r in run["results"]), run["results"]
    assert run["counters"]["prompt_tokens"] == 2 * 3 * 116  # both legs count the whole prompt, as vLLM does


def test_calibration_set_and_cli(tmp_path, capsys):
    reqs = fidelity.calibration_requests(0)
    assert [r.request_id for r in reqs[:2]] == ["calib-128-cold", "calib-128-warm"] and reqs[0].prompt == reqs[1].prompt
    out, js = tmp_path / "t.md", tmp_path / "t.json"
    assert fidelity.main(["--workload", "calibration", "--sim", "s=2000", "--routing", "round-robin",
                          "--out", str(out), "--json", str(js)]) == 0
    text = out.read_text()
    assert "| s | round-robin | 12 | 0 |" in text and "| calib-8192-warm |" in text
    with pytest.raises(SystemExit, match="integers"):
        fidelity.main(["--sim", "s=abc"])
    with pytest.raises(SystemExit, match="at least one target"):
        fidelity.main([])


def test_replicas_sharing_one_accelerator_slow_each_other_down():
    """Processor sharing: two equal prefills at once on one accelerator both take twice as long (virtual time);
    a request alone runs as fast as on its own accelerator."""
    both = [replace(r, arrival_s=0.0) for r in _requests(2)]
    alone = _requests(1)
    ttft = {}
    for kind in ("sim", "sim-shared"):
        for name, reqs in (("both", both), ("alone", alone)):
            run = asyncio.run(run_target(Target("v", kind, ("40", "40")), "round-robin", reqs, "h100-llama8b"))
            ttft[kind, name] = [r["ttft"] for r in run["results"]]
    assert ttft["sim", "alone"] == pytest.approx(ttft["sim-shared", "alone"])
    prof = load_profile()
    front = prof.request_overhead(116)
    for indep, shared in zip(ttft["sim", "both"], ttft["sim-shared", "both"], strict=True):
        assert shared - front == pytest.approx(2 * (indep - front))


def test_token_ids_fold_into_a_small_vocabulary_and_chat_turns_go_as_completions():
    from fidelity_run import token_prompts

    reqs = fidelity.pressure_requests(1, 4.0, 8, fidelity.workload_spec("multi-turn", groups=2, prefix_len=64,
                                                                      question_len=16, output_len=4))
    assert {r.kind for r in reqs} == {"chat"}
    wide, narrow = token_prompts(reqs), token_prompts(reqs, vocab=100)
    assert max(max(r.prompt) for r in wide) >= 100
    assert all(3 <= i < 100 for r in narrow for i in r.prompt)
    assert [len(r.prompt) for r in narrow] == [len(r.prompt) for r in wide]
    assert {r.kind for r in narrow} == {"completion"} and all(r.messages is None for r in narrow)
    # later turns of a session extend the earlier ones: the folded ids keep the shared prefix
    by_id = {r.request_id: r.prompt for r in narrow}
    assert by_id["chat-s0-t1"][:len(by_id["chat-s0-t0"])] == by_id["chat-s0-t0"]


def test_workload_shape_flags_reshape_the_pressure_cell():
    spec = fidelity.workload_spec("pressure", groups=5, prefix_len=128, output_len=3)
    assert (spec.num_groups, spec.system_prompt_len, spec.question_len, spec.output_len) == (5, 128, 256, 3)
    reqs = fidelity.pressure_requests(0, 2.0, 10, spec, arrival="constant")
    assert [r.arrival_s for r in reqs] == pytest.approx([0.5 * i for i in range(10)])


def test_compare_puts_real_cells_beside_simulated_runs(tmp_path, capsys):
    """fidelity_compare.py: one row per (rate, routing) of a fidelity_quiet.py file, the simulated run of the same
    cell beside it, the replicas' CPU as cores (CPU seconds / wall seconds)."""
    import json

    import fidelity_compare
    from fidelity_run import run_virtual

    reqs = _requests()
    cell = run_virtual([40, 40], "affinity", reqs, "h100-llama8b") | {
        "target": "real", "routing": "affinity", "rate": 4.0, "wall_s": 2.0, "replica_cpu_s": [1.0, 1.5],
        "client_cpu_s": 0.2, "load_start": 3.0, "load_end": 4.0}
    sim = {"rate": 4.0, "runs": [run_virtual([40, 40], "affinity", reqs, "h100-llama8b") | {"target": "sim", "routing": "affinity"}]}
    real_f, sim_f = tmp_path / "real.json", tmp_path / "sim.json"
    real_f.write_text(json.dumps({"cells": [cell]}))
    sim_f.write_text(json.dumps(sim))
    assert fidelity_compare.main(["--real", str(real_f), "--sim", str(sim_f)]) == 0
    row = capsys.readouterr().out.splitlines()[-1]
    assert row.startswith("| 4 | affinity | ") and "| 0.50, 0.75 | 0.10 | 3.0-4.0 |" in row
    hit = fidelity.summarize(cell)["hit_rate_engine"]
    assert f"{hit:.3f} / {hit:.3f}" in row  # the same requests on the same cores: the same counters
    assert fidelity_compare.main(["--real", str(real_f), "--sim", str(sim_f), "--per-request", "4", "affinity"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 + len(reqs) and all(" / " in x for x in lines[2:])


def test_a_burst_reaches_a_cpu_replica_one_request_at_a_time():
    """The cpu-tiny-llama front end (one API server process per replica): four requests sent at once to one
    replica reach it one after another and get their first tokens over more steps than with a parallel front end
    (where the first starts a step alone and the other three share the next)."""
    burst = [replace(r, arrival_s=0.0) for r in _requests(4)]
    serial = run_virtual_ttfts(burst, "cpu-tiny-llama")
    profile = load_profile("cpu-tiny-llama").model_copy(update={"serial_frontend": False,
                                                                "frontend_on_engine_core": False})
    parallel = run_virtual_ttfts(burst, profile)
    assert len(set(parallel)) == 2
    assert len(set(serial)) > len(set(parallel)) and max(serial) > max(parallel)


def run_virtual_ttfts(reqs, profile) -> list[float]:
    import tempfile

    import yaml
    from fidelity_run import run_virtual

    if not isinstance(profile, str):
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
            yaml.safe_dump(profile.model_dump(), f)
        profile = f.name
    run = run_virtual([512], "round-robin", reqs, profile, vocab=8192)
    return [round(r["ttft"], 9) for r in run["results"]]
