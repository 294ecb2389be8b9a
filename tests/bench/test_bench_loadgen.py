"""The load generator against a real in-process simulated engine: shape and sanity of what it measures."""

from __future__ import annotations

import json
import random

import pytest

from llmd_kserve.bench.loadgen import LoadConfig, run_load, run_sweep
from llmd_kserve.bench.runner import BenchOptions, bench_command
from llmd_kserve.bench.workloads import ArrivalSpec, ChatSpec, SharedPrefixSpec, build_requests, make_workload
from llmd_kserve.viz.report_page import write_html

running_engine = pytest.importorskip("llmd_kserve.engine_sim.server").running_engine


async def test_shared_prefix_open_loop_measures_every_request():
    spec = SharedPrefixSpec(num_groups=2, prompts_per_group=4, system_prompt_len=256, question_len=16, output_len=6)
    arrival = ArrivalSpec(pattern="poisson", rate=40)
    reqs = make_workload(spec, arrival, random.Random(0))
    async with running_engine(port=0) as eng:
        run = await run_load(reqs, arrival, LoadConfig(target=eng.url, engine_urls=[eng.url], progress=False))
    assert sorted(r.request_id for r in run.results) == sorted(r.request_id for r in reqs)
    for r in run.results:
        assert r.ok, r.error
        assert r.output_tokens == 6 and r.prompt_tokens == 272
        assert 0 < r.ttft <= r.e2e and len(r.itl) == 5 and all(g >= 0 for g in r.itl)
        assert r.start >= 0 and r.cached_tokens is not None
    s = run.summary()
    assert s["n"] == 8 and s["errors"] == 0 and s["output_tok_s"] > 0
    # 6 of 8 requests reuse a group's 256-token system prompt once its first request has been prefilled
    assert s["cache_hit_rate_usage"] > 0 and s["cache_hit_rate_engine"] > 0
    assert run.engine_counters["prefix_cache_queries"] >= 8 * 272 * 0.9


async def test_chat_closed_loop_and_sweep():
    spec = ChatSpec(num_sessions=2, turns_per_session=3, system_prompt_len=32, user_len=16, output_len=8)
    reqs = build_requests(spec, random.Random(1))
    async with running_engine(port=0) as eng:
        config = LoadConfig(target=eng.url, progress=False)
        run = await run_load(reqs, ArrivalSpec(pattern="concurrency", concurrency=2), config)
        by_id = {r.request_id: r for r in reqs}
        assert all(r.ok for r in run.results) and len(run.results) == 6
        # the engine renders the chat template with the same tokenizer, so usage matches the workload's count
        assert all(r.prompt_tokens == by_id[r.request_id].prompt_tokens for r in run.results)
        sweep = [ArrivalSpec(pattern="constant", rate=r) for r in (20, 40)]
        runs = await run_sweep([(a, reqs[:3]) for a in sweep], config)
    assert [r.label for r in runs] == ["constant@20/s", "constant@40/s"]
    assert all(len(r.results) == 3 and all(x.ok for x in r.results) for r in runs)


async def test_errors_are_results_not_exceptions():
    reqs = build_requests(SharedPrefixSpec(num_groups=1, prompts_per_group=4, system_prompt_len=16, question_len=4,
                                           output_len=4), random.Random(0))
    async with running_engine(port=0, error_rate=1.0) as eng:
        run = await run_load(reqs, ArrivalSpec(pattern="concurrency", concurrency=2),
                             LoadConfig(target=eng.url, progress=False))
    s = run.summary()
    assert s["n"] == 4 and s["errors"] == 4 and s["ttft_p50"] is None and s["goodput_rps"] == 0


async def test_bench_command_writes_json_and_html(tmp_path):
    async with running_engine(port=0) as eng:
        import asyncio

        code = await asyncio.to_thread(bench_command, BenchOptions(
            target=eng.url, workload="reasoning", overrides=("input_len_max=64", "output_len_min=4", "output_len_max=8"),
            num_requests=5, concurrency=2, slo_ttft=10.0, json_path=str(tmp_path / "b.json"),
            html_path=str(tmp_path / "b.html"), policy_label="direct", progress=False), None, write_html)
    assert code == 0
    report = json.loads((tmp_path / "b.json").read_text())
    assert report["workload"]["kind"] == "reasoning" and report["workload"]["mode"] == "live"
    (run,) = report["runs"]
    assert run["policy"] == "direct" and run["summary"]["n"] == 5 and len(run["requests"]) == 5
    assert {"ttft_p50", "goodput_rps", "cache_hit_rate"} <= set(run["summary"])
    assert (tmp_path / "b.html").stat().st_size > 100_000
