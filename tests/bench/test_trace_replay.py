"""Trace replay: windows, time scale, fitting to the context, the trace's description, and runs of a trace in the
simulator and live against an engine that reports its context length."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from llmd_kserve.bench.runner import BenchOptions, bench_command
from llmd_kserve.bench.workloads import (
    TraceEntry,
    TraceSpec,
    build_requests,
    describe_trace,
    fit_summary,
    load_trace,
    parse_window,
)
from llmd_kserve.errors import ConfigError
from llmd_kserve.tokenizer import SimTokenizer

ROOT = Path(__file__).resolve().parents[2]
EXCERPTS = {p.name: p for p in (ROOT / "benchmarks" / "traces").glob("*.jsonl")}
TOK = SimTokenizer()


def _write(path: Path, lines: list[dict]) -> Path:
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


def _trace(tmp_path: Path) -> Path:
    return _write(tmp_path / "t.jsonl", [
        {"timestamp": 10_000, "input_length": 40, "output_length": 4, "hash_ids": [1, 2, 3]},
        {"timestamp": 12_000, "input_length": 40, "output_length": 4, "hash_ids": [1, 2, 7]},
        {"timestamp": 16_000, "input_length": 50, "output_length": 30, "hash_ids": [1, 2, 3, 4]},
        {"timestamp": 20_000, "input_length": 10, "output_length": 4, "hash_ids": [9]},
    ])


def test_window_cap_and_time_scale(tmp_path):
    path = _trace(tmp_path)
    spec = load_trace(path, block_tokens=16, time_scale=0.1)
    assert [r.arrival_s for r in build_requests(spec, random.Random(0))] == pytest.approx([0.0, 0.2, 0.6, 1.0])
    windowed = load_trace(path, block_tokens=16, window=parse_window("2:10"))  # seconds after the first request
    assert [e.timestamp for e in windowed.entries] == [12_000, 16_000]
    assert [r.arrival_s for r in build_requests(windowed, random.Random(0))] == pytest.approx([0.0, 4.0])
    assert len(load_trace(path, window=parse_window("6:"), max_requests=1).entries) == 1
    for bad in ("5", "a:b", "9:3", "-1:"):
        with pytest.raises(ConfigError, match="window"):
            parse_window(bad)
    with pytest.raises(ConfigError, match="no request"):
        load_trace(path, window=parse_window("100:"))
    with pytest.raises(ConfigError, match="unknown trace format"):
        load_trace(path, fmt="sharegpt")


def test_requests_sharing_hash_ids_share_exactly_those_tokens(tmp_path):
    spec = load_trace(_trace(tmp_path), block_tokens=16)
    reqs = build_requests(spec, random.Random(0))
    ids = [TOK.encode(r.prompt) for r in reqs]
    assert [len(x) for x in ids] == [40, 40, 50, 10] == [r.prompt_tokens for r in reqs]
    assert ids[0][:32] == ids[1][:32] and ids[0][32:40] != ids[1][32:40]  # blocks 1, 2 shared; 3 vs 7 not
    assert ids[0][:40] == ids[2][:40]  # block 3's first 8 tokens are the same wherever block 3 appears
    assert ids[3][:10] != ids[0][:10]
    assert build_requests(spec, random.Random(0)) == reqs
    other = build_requests(spec, random.Random(1))  # another seed: other text, same structure
    assert other[0].prompt != reqs[0].prompt and TOK.encode(other[0].prompt)[:32] == TOK.encode(other[1].prompt)[:32]


def test_fitting_to_the_context_clips_the_tail_or_drops(tmp_path):
    path = _trace(tmp_path)
    clip = load_trace(path, block_tokens=16, max_model_len=48)
    reqs = build_requests(clip, random.Random(0))
    assert [(r.prompt_tokens, r.max_tokens) for r in reqs] == [(40, 4), (40, 4), (24, 24), (10, 4)]
    assert all(r.prompt_tokens + r.max_tokens <= 48 for r in reqs)
    assert TOK.encode(reqs[2].prompt) == TOK.encode(reqs[0].prompt)[:24]  # the clipped one keeps its shared prefix
    fit = fit_summary(clip)
    assert (fit.clipped, fit.dropped, fit.input_tokens_cut, fit.output_tokens_cut) == (1, 0, 26, 6)
    assert "1 of 4 requests clipped to the 48-token context" in fit.line()
    drop = load_trace(path, block_tokens=16, max_model_len=48, fit="drop")
    assert [r.request_id for r in build_requests(drop, random.Random(0))] == ["trace-0", "trace-1", "trace-3"]
    assert fit_summary(drop).dropped == 1 and "left out" in fit_summary(drop).line()
    assert fit_summary(load_trace(path)).line().startswith("4 requests, not fitted")


def test_describe_counts_blocks_seen_before_and_the_shared_prefixes(tmp_path):
    stats = describe_trace(load_trace(_trace(tmp_path), block_tokens=16))
    assert stats.requests == 4 and stats.span_s == 10.0 and stats.rate_rps == pytest.approx(0.4)
    assert (stats.blocks, stats.unique_blocks) == (11, 6)
    assert stats.blocks_seen_before == pytest.approx(5 / 11)  # 1, 2 (request 2) and 1, 2, 3 (request 3)
    # leading hits: blocks 1, 2 (32 of request 2's 40 tokens) and 1, 2, 3 (48 of request 3's 50)
    assert stats.prefix_hit_bound == pytest.approx((32 + 48) / 140)
    assert [(p.blocks, p.requests) for p in stats.top_prefixes] == [(2, 3), (3, 2)]  # 6 block-uses each
    assert stats.input.max == 50 and stats.output.p50 == 4
    text = "\n".join(stats.lines())
    assert "4 requests over 10.0 s" in text and "45.5% seen in an earlier request" in text


def test_the_shipped_excerpts_parse_and_share_prefixes():
    assert set(EXCERPTS) == {"mooncake_conversation_500.jsonl", "mooncake_synthetic_500.jsonl"}
    readme = (ROOT / "benchmarks" / "traces" / "README.md").read_text()
    assert "3cca71daccf2a7afb8fe3f0295358f70e3a69fdb" in readme and "Apache License 2.0" in readme
    for path in EXCERPTS.values():
        spec = load_trace(path, max_model_len=16384)
        stats = describe_trace(spec)
        assert stats.requests == 500 and stats.span_s > 60
        assert 0 < stats.blocks_seen_before < 0.5 and stats.over_context == fit_summary(spec).clipped > 0
        assert all(len(e.hash_ids) == -(-e.input_length // 512) for e in spec.entries)  # one id per 512 tokens


def test_bench_sim_replays_a_trace_and_reports_what_was_clipped(tmp_path, capsys):
    from llmd_kserve.cluster_sim import run_bench as simulator

    out = tmp_path / "run.json"
    code = bench_command(BenchOptions(trace=str(EXCERPTS["mooncake_conversation_500.jsonl"]), sim=True, engines=4,
                                  max_requests=40, time_scale=0.5, json_path=str(out), progress=False), simulator)
    assert code == 0
    printed = capsys.readouterr().out
    report = json.loads(out.read_text())
    fit = report["workload"]["trace_fit"]
    assert fit["requests"] == 40 and fit["clipped"] > 0 and fit["max_model_len"] == 16384
    assert f"{fit['clipped']} of 40 requests clipped to the 16384-token context" in printed
    (run,) = report["runs"]
    assert run["summary"]["n"] == 40 and run["summary"]["errors"] == 0 and run["arrival"] == "trace"
    starts = sorted(r["start"] for r in run["requests"])
    recorded = load_trace(EXCERPTS["mooncake_conversation_500.jsonl"], max_requests=40).entries
    assert starts[-1] == pytest.approx((recorded[-1].timestamp - recorded[0].timestamp) / 1000 * 0.5, abs=0.01)
    assert max(r["prompt_tokens"] for r in run["requests"]) <= 16384


def test_describe_writes_json_and_runs_nothing(tmp_path, capsys):
    out = tmp_path / "d.json"
    assert bench_command(BenchOptions(trace=str(EXCERPTS["mooncake_synthetic_500.jsonl"]), describe=True,
                                  json_path=str(out))) == 0
    assert "500 requests" in capsys.readouterr().out
    doc = json.loads(out.read_text())
    assert doc["requests"] == 500 and doc["max_model_len"] == 16384 and doc["top_prefixes"]
    with pytest.raises(ConfigError, match="--describe needs --trace"):
        bench_command(BenchOptions(describe=True))
    with pytest.raises(ConfigError, match="cannot be combined"):
        bench_command(BenchOptions(trace=str(out), workload="chat"))


async def test_live_replay_fits_to_the_context_the_target_reports(tmp_path):
    import asyncio

    running_engine = pytest.importorskip("llmd_kserve.engine_sim.server").running_engine
    path = _write(tmp_path / "long.jsonl", [
        {"timestamp": 0, "input_length": 300, "output_length": 8, "hash_ids": [1]},
        {"timestamp": 50, "input_length": 900, "output_length": 8, "hash_ids": [1, 2]},
        {"timestamp": 100, "input_length": 200, "output_length": 600, "hash_ids": [1]},
    ])
    async with running_engine(port=0, max_model_len=512) as eng:
        out = tmp_path / "live.json"
        code = await asyncio.to_thread(bench_command, BenchOptions(
            target=eng.url, trace=str(path), json_path=str(out), progress=False))
    assert code == 0
    report = json.loads(out.read_text())
    assert report["workload"]["trace_fit"]["max_model_len"] == 512
    assert report["workload"]["trace_fit"]["clipped"] == 2
    (run,) = report["runs"]
    assert run["summary"]["errors"] == 0 and run["summary"]["n"] == 3
    # 900 + 8 keeps its output and cuts its input to 504; 200 + 600 cuts its output to half the context
    assert sorted((r["prompt_tokens"], r["output_tokens"]) for r in run["requests"]) == [(200, 256), (300, 8),
                                                                                            (504, 8)]


def test_trace_entries_need_lengths():
    with pytest.raises(ValueError):
        TraceEntry.model_validate({"timestamp": 1})
    assert TraceSpec(entries=()).time_scale == 1.0
