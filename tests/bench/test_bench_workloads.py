"""Workloads are deterministic, token lengths are exact, prefixes are shared where they should be."""

from __future__ import annotations

import json
import random

import pytest

from llmd_kserve.bench.workloads import (
    ArrivalSpec,
    ChatSpec,
    RagSpec,
    ReasoningSpec,
    SharedPrefixSpec,
    assign_arrivals,
    build_requests,
    load_trace,
    make_workload,
    sweep,
)
from llmd_kserve.errors import ConfigError
from llmd_kserve.tokenizer import SimTokenizer

TOK = SimTokenizer()
SPECS = [
    SharedPrefixSpec(num_groups=3, prompts_per_group=4, system_prompt_len=200, question_len=30, output_len=8),
    ChatSpec(num_sessions=3, turns_per_session=3, system_prompt_len=50, user_len=20, output_len=10),
    RagSpec(num_requests=5, num_documents=8, document_len=100, docs_min=2, docs_max=4),
    ReasoningSpec(num_requests=5, input_len_min=10, input_len_max=20, output_len_min=100, output_len_max=200),
]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.kind)
def test_deterministic_and_exact_lengths(spec):
    a = make_workload(spec, ArrivalSpec(rate=10), random.Random(7))
    b = make_workload(spec, ArrivalSpec(rate=10), random.Random(7))
    c = make_workload(spec, ArrivalSpec(rate=10), random.Random(8))
    assert a == b and a != c
    assert len({r.request_id for r in a}) == len(a)
    for r in a:
        assert len(TOK.encode(r.prompt)) == r.prompt_tokens
        assert r.max_tokens >= 1 and r.arrival_s is not None


def test_shared_prefix_groups_share_exact_prefix():
    spec = SPECS[0]
    reqs = build_requests(spec, random.Random(1))
    assert len(reqs) == 12 and all(r.prompt_tokens == 230 for r in reqs)
    by_group: dict[str, list[list[int]]] = {}
    for r in reqs:
        by_group.setdefault(r.group, []).append(TOK.encode(r.prompt))
    assert len(by_group) == 3
    firsts = set()
    for ids in by_group.values():
        assert all(x[:200] == ids[0][:200] for x in ids)
        assert len({tuple(x[200:]) for x in ids}) == len(ids)
        firsts.add(tuple(ids[0][:200]))
    assert len(firsts) == 3
    assert [r.group for r in reqs] != sorted(r.group for r in reqs)  # groups interleave


def test_num_requests_scales_and_truncates():
    reqs = build_requests(SPECS[0], random.Random(1), num_requests=20)
    assert len(reqs) == 20


def test_chat_sessions_grow_and_stay_ordered():
    reqs = build_requests(SPECS[1], random.Random(3))
    assert len(reqs) == 9 and all(r.kind == "chat" for r in reqs)
    sessions: dict[str, list] = {}
    for r in reqs:
        sessions.setdefault(r.session_id, []).append(r)
    for turns in sessions.values():
        assert [t.request_id[-2:] for t in turns] == ["t0", "t1", "t2"]
        for prev, cur in zip(turns, turns[1:], strict=False):
            assert cur.prompt.startswith(prev.prompt)  # the previous turn is the new prompt's prefix
            assert cur.messages[: len(prev.messages)] == prev.messages
            assert cur.messages[len(prev.messages)][0] == "assistant"
            assert len(TOK.encode(cur.messages[len(prev.messages)][1])) == 10
            assert TOK.encode(cur.prompt)[: prev.prompt_tokens] == TOK.encode(prev.prompt)


def test_rag_and_reasoning_defaults_have_their_shape():
    rag = build_requests(RagSpec(num_requests=4), random.Random(0))
    assert all(4096 <= r.prompt_tokens <= 8192 and r.max_tokens <= 128 for r in rag)
    rs = build_requests(ReasoningSpec(num_requests=4), random.Random(0))
    assert all(r.prompt_tokens <= 256 and 1000 <= r.max_tokens <= 2000 for r in rs)


def test_arrivals():
    reqs = build_requests(SPECS[3], random.Random(0))
    const = assign_arrivals(reqs, ArrivalSpec(pattern="constant", rate=4), random.Random(0))
    assert [r.arrival_s for r in const] == pytest.approx([0, 0.25, 0.5, 0.75, 1.0])
    closed = assign_arrivals(reqs, ArrivalSpec(pattern="concurrency", concurrency=2), random.Random(0))
    assert all(r.arrival_s is None for r in closed)
    many = assign_arrivals(build_requests(ReasoningSpec(num_requests=2000, input_len_max=10, output_len_max=1000),
                                          random.Random(0)), ArrivalSpec(rate=50), random.Random(0))
    gaps = [b.arrival_s - a.arrival_s for a, b in zip(many, many[1:], strict=False)]
    assert sum(gaps) / len(gaps) == pytest.approx(1 / 50, rel=0.1) and min(gaps) >= 0
    assert [a.rate for a in sweep([1, 2.5])] == [1, 2.5]
    with pytest.raises(ValueError):
        ArrivalSpec(pattern="poisson")


def test_trace_replay_shares_blocks(tmp_path):
    lines = [
        {"timestamp": 1000, "input_length": 1100, "output_length": 5, "hash_ids": [1, 2, 3]},
        {"timestamp": 1500, "input_length": 700, "output_length": 7, "hash_ids": [1, 9]},
        {"timestamp": 3000, "input_length": 300, "output_length": 9, "hash_ids": [4]},
    ]
    path = tmp_path / "trace.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    spec = load_trace(path, time_scale=0.5)
    reqs = build_requests(spec, random.Random(0))
    assert [r.arrival_s for r in reqs] == pytest.approx([0.0, 0.25, 1.0])
    ids = [TOK.encode(r.prompt) for r in reqs]
    assert [len(x) for x in ids] == [1100, 700, 300] == [r.prompt_tokens for r in reqs]
    assert ids[0][:512] == ids[1][:512] and ids[0][512:700] != ids[1][512:700]
    assert ids[2][:300] != ids[0][:300]
    assert build_requests(spec, random.Random(0)) == reqs
    assert make_workload(spec, ArrivalSpec(pattern="trace"), random.Random(0)) == reqs
    path.write_text("{not json\n")
    with pytest.raises(ConfigError):
        load_trace(path)
