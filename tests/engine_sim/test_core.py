"""EngineCore on a virtual clock: prefix caching, chunked prefill, batching limits, preemption, determinism, P/D."""

from __future__ import annotations

import random

import pytest

from llmd_kserve.engine_sim.core import EngineCore
from llmd_kserve.kvcache.events import BlockRemoved, BlockStored


def run(core: EngineCore, t: float = 0.0) -> tuple[float, dict[str, list[int]], dict[str, str], list]:
    tokens: dict[str, list[int]] = {}
    finished: dict[str, str] = {}
    outs = []
    while core.has_work():
        out = core.step(t)
        t = out.end
        outs.append(out)
        for rid, tok in out.new_tokens.items():
            tokens.setdefault(rid, []).append(tok)
        finished.update(out.finished)
    return t, tokens, finished, outs


def prompt(n: int, seed: int = 1) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(10, 32000) for _ in range(n)]


def test_prefix_hit_second_request(profile):
    core = EngineCore(profile, num_blocks=1000, enable_kv_events=True)
    p = prompt(1000)
    core.add_request("a", p, 4)
    t, toks, fin, outs = run(core)
    assert fin == {"a": "length"} and len(toks["a"]) == 4
    assert outs[0].cached_tokens == {"a": 0}
    core.add_request("b", p + prompt(50, 2), 4)
    out = core.step(t)
    assert out.cached_tokens == {"b": 992}  # 62 full blocks of the shared 1000 tokens
    assert core.stats.prefix_hits == 992 and core.stats.prefix_queries == 1000 + 1050
    stored = [e for o in outs for e in o.kv_events if isinstance(e, BlockStored)]
    assert stored[0].parent_block_hash is None and len(stored[0].block_hashes) == 62


def test_full_hit_recomputes_last_block(profile):
    core = EngineCore(profile, num_blocks=100)
    p = prompt(64)
    core.add_request("a", p, 1)
    t, *_ = run(core)
    core.add_request("b", p, 1)
    out = core.step(t)
    assert out.cached_tokens == {"b": 48} and out.num_prefill_tokens == 16


def test_chunked_prefill_under_token_budget(profile):
    core = EngineCore(profile, num_blocks=2000, max_num_batched_tokens=1000)
    core.add_request("a", prompt(2500), 2)
    out1 = core.step(0.0)
    assert out1.num_prefill_tokens == 1000 and not out1.new_tokens
    out2 = core.step(out1.end)
    out3 = core.step(out2.end)
    assert out3.num_prefill_tokens == 500 and "a" in out3.first_token


def test_running_requests_first_then_waiting(profile):
    core = EngineCore(profile, num_blocks=2000, max_num_batched_tokens=600, async_scheduling=False)
    core.add_request("a", prompt(100, 1), 5)
    core.step(0.0)
    core.add_request("b", prompt(2000, 2), 5)
    out = core.step(1.0)
    assert out.num_decode_seqs == 1 and out.num_prefill_tokens == 599  # a's decode token first, b gets the rest


def test_max_num_seqs_caps_the_batch(profile):
    core = EngineCore(profile, num_blocks=2000, max_num_seqs=3)
    for i in range(5):
        core.add_request(str(i), prompt(20, i), 3)
    core.step(0.0)
    assert core.num_running == 3 and core.num_waiting == 2


def test_preemption_by_recompute_when_blocks_run_out(profile):
    core = EngineCore(profile, num_blocks=20, block_size=16)
    core.add_request("a", prompt(100, 1), 120)  # needs 14 blocks by the end
    core.add_request("b", prompt(100, 2), 120)
    t, toks, fin, outs = run(core)
    assert core.stats.num_preemptions >= 1
    assert any("b" in o.preempted for o in outs)  # the newest request is the victim
    assert fin == {"a": "length", "b": "length"}
    assert len(toks["a"]) == 120 and len(toks["b"]) == 120  # recompute keeps already generated tokens
    assert core.kv_usage == 0.0


def test_deterministic_given_seed_and_clock(profile):
    def trace(seed: int):
        core = EngineCore(profile, num_blocks=300, seed=seed)
        for i in range(20):
            core.add_request(f"r{i}", prompt(50 + 37 * i, i), 10 + i)
        t, toks, _fin, outs = run(core)
        return t, toks, [o.duration for o in outs]

    assert trace(3) == trace(3)
    assert trace(3)[1] != trace(4)[1]


def test_output_len_simulates_eos(profile):
    core = EngineCore(profile, num_blocks=100)
    core.add_request("a", prompt(10), 50, output_len=7)
    _t, toks, fin, _ = run(core)
    assert fin == {"a": "stop"} and len(toks["a"]) == 7


def test_eviction_emits_removed_events(profile):
    core = EngineCore(profile, num_blocks=9, block_size=16, enable_kv_events=True)  # 8 usable
    core.add_request("a", prompt(64, 1), 1)
    t, *_ = run(core)
    core.add_request("b", prompt(120, 2), 1)
    _t, _toks, _fin, outs = run(core, t)
    removed = [h for o in outs for e in o.kv_events if isinstance(e, BlockRemoved) for h in e.block_hashes]
    assert removed  # a's cached blocks were reclaimed for b


def test_hold_release_and_remote_kv(profile):
    prefill = EngineCore(profile, num_blocks=100, enable_kv_events=True)
    p = prompt(200)
    prefill.add_request("p", p, 1, hold_on_finish=True)
    _t, _toks, fin, _ = run(prefill)
    assert fin == {"p": "length"}
    held = prefill.held_blocks("p")
    assert held is not None and len(held) == 13
    assert prefill.kv_usage > 0
    assert prefill.release("p") and prefill.kv_usage == 0 and not prefill.release("p")

    decode = EngineCore(profile, num_blocks=100, enable_kv_events=True)
    decode.add_request("d", p, 5, remote_kv=True)
    out = decode.step(0.0)
    assert out.num_prefill_tokens == 1 and "d" in out.first_token
    assert sum(len(e.block_hashes) for e in out.kv_events if isinstance(e, BlockStored)) == 12


def test_abort_and_misuse(profile):
    core = EngineCore(profile, num_blocks=100, max_model_len=1000)
    core.add_request("a", prompt(10), 5)
    with pytest.raises(ValueError, match="duplicate"):
        core.add_request("a", prompt(10), 5)
    with pytest.raises(ValueError, match="max_model_len"):
        core.add_request("b", prompt(990), 20)
    with pytest.raises(ValueError):
        core.add_request("c", [], 5)
    core.step(0.0)
    assert core.abort("a") and not core.has_work() and core.kv_usage == 0.0
    assert not core.abort("zzz")


def test_cached_prefix_tokens_counts_whole_blocks_but_not_the_last_token(profile):
    core = EngineCore(profile, num_blocks=1000)
    p = prompt(1000)
    assert core.cached_prefix_tokens(p) == 0
    core.add_request("a", p, 1)
    run(core)
    bs = core.block_size
    assert core.cached_prefix_tokens(p) == (999 // bs) * bs  # vLLM recomputes the last token
    assert core.cached_prefix_tokens(p[:320] + prompt(100, 9)) == 320
    assert core.cached_prefix_tokens(prompt(1000, 5)) == 0
