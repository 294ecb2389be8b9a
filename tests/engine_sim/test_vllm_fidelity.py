"""The simulated engine under KV-cache pressure follows vLLM 0.26's v1 engine; each test names the vLLM code it pins.

Read from vLLM 0.26.0's wheel (``vllm/v1/core/{block_pool,kv_cache_manager,single_type_kv_cache_manager}.py``,
``vllm/v1/core/sched/scheduler.py``, ``vllm/config/scheduler.py``, ``vllm/v1/metrics/{stats,loggers}.py``).
"""

from __future__ import annotations

import random

from llmd_kserve.engine_sim.block_pool import BlockPool
from llmd_kserve.engine_sim.core import EngineCore
from llmd_kserve.kvcache.events import BlockRemoved


def prompt(n: int, seed: int = 1) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(10, 32000) for _ in range(n)]


def run(core: EngineCore, t: float = 0.0) -> float:
    for _ in range(10_000):
        if not core.has_work():
            return t
        t = core.step(t).end
    raise AssertionError("engine did not drain")


# --- metrics -----------------------------------------------------------------------------------------------------
def test_prefix_counters_count_every_lookup_of_a_blocked_head(profile):
    """``Scheduler.schedule`` calls ``KVCacheManager.get_computed_blocks`` for the waiting head every step it is
    tried, and ``get_computed_blocks`` records ``PrefixCacheStats.record(num_tokens=request.num_tokens, ...)`` before
    ``allocate_slots`` can fail: a head that does not fit adds its length to the queries at every attempt."""
    core = EngineCore(profile, num_blocks=20, block_size=16)
    core.add_request("a", prompt(200, 1), 40)  # 13 blocks, decodes for 40 steps
    core.add_request("b", prompt(200, 2), 4)  # 13 blocks: does not fit beside a
    t = 0.0
    for k in range(1, 4):
        t = core.step(t).end
        assert core.num_waiting == 1
        assert core.stats.prefix_queries == 200 + 200 * k  # a once, b at each of the k steps it was tried
    assert core.stats.prefix_hits == 0


def test_preempted_requests_add_nothing_to_the_prefix_counters(profile):
    """``PrefixCacheStats.record(preempted=request.num_preemptions > 0)`` puts a resumed request's lookup into
    ``preempted_queries``/``preempted_hits``, which ``PrometheusStatLogger.record`` does not export: only
    ``queries``/``hits`` reach ``vllm:prefix_cache_{queries,hits}_total``."""
    core = EngineCore(profile, num_blocks=15, block_size=16)  # 14 usable
    core.add_request("a", prompt(100, 1), 100)  # 7 blocks now, 13 by the end
    core.add_request("b", prompt(100, 2), 100)
    run(core)
    assert core.stats.num_preemptions >= 1
    assert core.stats.prefix_queries == 200 and core.stats.prefix_hits == 0  # b's re-admissions are not counted
    assert core.stats.prefill_tokens_run > 200  # ... although b re-prefilled


def test_prompt_tokens_count_whole_prompts_once(profile):
    """``vllm:prompt_tokens_total`` is ``PromptTokenStats.total``: each request's whole prompt (cached or not), added
    with its first token (``IterationStats.update_from_output`` while prefilling). The split by source comes from
    ``PrefillStats.set`` at the first scheduling only (``num_preemptions <= 0``). Without pressure queries equal
    prompt tokens, as in the golden sample (663,040 = 663,040; hits 115,312 = local_cache_hit)."""
    core = EngineCore(profile, num_blocks=1000)
    p = prompt(1000)
    core.add_request("a", p, 4)
    t = run(core)
    core.add_request("b", p + prompt(50, 2), 4)
    run(core, t)
    st = core.stats
    assert st.prompt_tokens == 2050 == st.prefix_queries
    assert (st.prompt_tokens_local_hit, st.prompt_tokens_computed) == (992, 2050 - 992) and st.prefix_hits == 992

    pressed = EngineCore(profile, num_blocks=15, block_size=16)  # 14 usable
    pressed.add_request("a", prompt(100, 1), 100)
    pressed.add_request("b", prompt(100, 2), 100)
    run(pressed)
    assert pressed.stats.num_preemptions >= 1 and pressed.stats.prompt_tokens == 200


# --- when blocks become hits -------------------------------------------------------------------------------------
def test_blocks_scheduled_this_step_are_hits_for_requests_admitted_after(profile):
    """``KVCacheManager.allocate_slots`` ends with ``coordinator.cache_blocks(request, min(total_computed_tokens +
    num_new_tokens, request.num_tokens))``: the full blocks a step is about to compute are in the prefix cache as soon
    as the step is scheduled, so a request admitted later in the same ``schedule()`` hits them."""
    core = EngineCore(profile, num_blocks=500, block_size=16)
    shared = prompt(320, 1)
    core.add_request("a", shared + prompt(40, 2), 4)
    core.add_request("b", shared + prompt(40, 3), 4)
    out = core.step(0.0)
    assert out.cached_tokens == {"a": 0, "b": 320}
    assert out.num_prefill_tokens == 360 + 40


def test_chunked_prefill_exposes_each_chunk_as_it_is_scheduled(profile):
    """The same rule for a prompt longer than the token budget: a newcomer admitted in the step that schedules the
    prompt's last chunk hits that chunk's full blocks too, not only the chunks computed before."""
    core = EngineCore(profile, num_blocks=500, block_size=16, max_num_batched_tokens=1000, async_scheduling=False)
    p = prompt(1500, 1)
    core.add_request("a", p, 2)
    t = core.step(0.0).end  # a's first 1000 tokens (62 full blocks)
    core.add_request("b", p + prompt(20, 2), 2)
    out = core.step(t)  # a's last 500 tokens, then b with the rest of the budget
    assert out.cached_tokens == {"b": 1488}  # 93 blocks: the chunk scheduled in this very step included


# --- admission ---------------------------------------------------------------------------------------------------
def test_admission_needs_blocks_for_the_whole_prompt(profile):
    """``SchedulerConfig.scheduler_reserve_full_isl`` defaults to True, so ``allocate_slots(full_sequence_must_fit=
    True)`` refuses a waiting request unless blocks for all ``request.num_tokens`` fit, even if its first chunk
    would."""
    core = EngineCore(profile, num_blocks=150, block_size=16, max_num_batched_tokens=2000)
    core.add_request("a", prompt(1500, 1), 8)  # 94 blocks, leaves 56 free and 500 tokens of budget
    core.add_request("b", prompt(1000, 2), 8)  # 63 blocks: its 500-token first chunk (32 blocks) would fit
    out = core.step(0.0)
    assert out.scheduled_first == ("a",) and core.num_waiting == 1 and out.num_prefill_tokens == 1500


def test_a_blocked_head_stops_admission_fcfs(profile):
    """``Scheduler.schedule``: when ``allocate_slots`` returns None for the waiting head it ``break``s (FCFS), so a
    smaller request behind it that would fit is not admitted in that step."""
    core = EngineCore(profile, num_blocks=30, block_size=16)
    core.add_request("a", prompt(300, 1), 20)  # 19 blocks
    core.add_request("b", prompt(300, 2), 4)  # 19 blocks: does not fit
    core.add_request("c", prompt(20, 3), 4)  # 2 blocks: would fit
    out = core.step(0.0)
    assert out.scheduled_first == ("a",) and core.num_waiting == 2


def test_full_prompt_hit_recomputes_the_last_block(profile):
    """``KVCacheManager.get_computed_blocks``: ``max_cache_hit_length = request.num_tokens - 1`` and hits are whole
    blocks (``FullAttentionManager.find_longest_cache_hit`` with hash block size == block size): a block-aligned
    prompt seen before recomputes its whole last block."""
    core = EngineCore(profile, num_blocks=100, block_size=16)
    p = prompt(64)
    core.add_request("a", p, 1)
    t = run(core)
    core.add_request("b", p, 1)
    out = core.step(t)
    assert out.cached_tokens == {"b": 48} and out.num_prefill_tokens == 16


# --- free queue and eviction -------------------------------------------------------------------------------------
def test_unhashed_blocks_are_reused_before_cached_ones():
    """``BlockPool.free_blocks``: blocks without a hash are ``prepend_n``-ed to the free queue (reused first, in the
    order given), blocks with a hash ``append_n``-ed to its tail; ``get_new_blocks`` pops from the head."""
    pool = BlockPool(7, 4)  # block 0 is the null block
    blocks = pool.allocate(3)  # 1, 2, 3; 4..6 stay free
    pool.cache_blocks(blocks[:2], [11, 12], None, ())  # block 3 is a partial tail: no hash
    pool.free(blocks[::-1])  # a request's blocks are freed tail-first (SingleTypeKVCacheManager.free)
    assert pool.allocate(1) == [3]  # the unhashed block, ahead of the never-used 4..6
    assert pool.allocate(3) == [4, 5, 6]
    assert pool.allocate(1) == [2] and pool.lookup([11, 12]) == [1]  # then the cached tail block is evicted first


def test_a_duplicate_cached_block_survives_eviction_of_the_first_copy():
    """``BlockHashToBlockMap``: vLLM does not de-duplicate cached blocks (``insert`` keeps both ids under the hash),
    ``get_one_block`` returns the earliest one, and evicting one copy (``pop(key, block_id)``) keeps the other."""
    pool = BlockPool(5, 4, enable_events=True)  # 4 usable
    first = pool.allocate(1)
    pool.cache_blocks(first, [7], None, list(range(4)))
    second = pool.allocate(1)
    pool.cache_blocks(second, [7], None, list(range(4)))  # the same prefix computed by a second request
    assert pool.lookup([7]) == first
    pool.free(first)
    pool.allocate(2)  # the two never-used blocks
    assert pool.allocate(1) == first  # evicts the first copy ...
    assert pool.lookup([7]) == second  # ... the second still hits
    removed = [e.block_hashes for e in pool.take_events() if isinstance(e, BlockRemoved)]
    assert removed == [[7]]


def test_block_zero_is_the_null_block():
    """``BlockPool.__init__`` pops block 0 off the free queue as ``null_block`` (never allocated, never freed), and
    ``BlockPool.get_usage`` divides by ``num_gpu_blocks - 1``: ``num_gpu_blocks`` blocks hold one block less."""
    pool = BlockPool(5, 4)
    assert pool.num_free == 4 and pool.num_usable == 4
    got = pool.allocate(4)
    assert sorted(got) == [1, 2, 3, 4] and pool.usage == 1.0
    pool.free(got[:2])
    assert pool.usage == 0.5


def test_a_request_needing_every_block_is_refused(profile):
    """With the null block reserved, a request whose sequence needs all ``num_gpu_blocks`` can never be scheduled."""
    core = EngineCore(profile, num_blocks=4, block_size=16)
    core.add_request("fits", prompt(47, 1), 1)  # 48 tokens: 3 blocks
    try:
        core.add_request("too-big", prompt(63, 2), 1)  # 64 tokens: 4 blocks
    except ValueError as exc:
        assert "more KV blocks" in str(exc)
    else:
        raise AssertionError("a 4-block request was accepted by a 4-block engine")


# --- async scheduling (on by default in vLLM 0.26) ---------------------------------------------------------------
def test_async_scheduling_admits_a_newcomer_one_step_later(profile):
    """``EngineCore.step_with_batch_queue`` (batch queue of 2 with async scheduling) schedules the next step as soon
    as the current one is launched, before blocking on its result: a request that arrives while a step runs misses
    the step already scheduled behind it and joins the one after. An idle engine schedules an arrival at once."""
    for async_on, admitted_at in ((True, 3), (False, 2)):
        core = EngineCore(profile, num_blocks=500, async_scheduling=async_on)
        core.add_request("a", prompt(100, 1), 20)
        t = core.step(0.0).end  # step 1: a's prefill (the engine was idle: a is scheduled at once)
        core.add_request("b", prompt(100, 2), 4)  # arrives during step 1
        for k in (2, 3):
            out = core.step(t)
            t = out.end
            assert ("b" in out.scheduled_first) == (k == admitted_at), (async_on, k)


def test_async_scheduling_frees_a_finished_request_after_the_next_schedule(profile):
    """With async scheduling ``update_from_output`` (which frees a finished request's blocks through
    ``_free_request``) runs for step N after step N+1 has been scheduled: a waiting head that needs those blocks is
    tried once more in N+1 (and counted again in the prefix queries) and gets in at N+2."""
    results = {}
    for async_on in (True, False):
        core = EngineCore(profile, num_blocks=21, block_size=16, async_scheduling=async_on)  # 20 usable
        core.add_request("a", prompt(200, 1), 2)  # 13 blocks; finishes at the end of step 2
        core.add_request("b", prompt(200, 2), 2)  # 13 blocks: waits for a's
        t, admitted_at = 0.0, None
        for k in range(1, 6):
            out = core.step(t)
            t = out.end
            if "b" in out.scheduled_first:
                admitted_at = k
                break
        results[async_on] = (admitted_at, core.stats.prefix_queries)
    assert results[False] == (3, 200 + 200 * 3)  # a once; b tried at steps 1, 2, 3
    assert results[True] == (4, 200 + 200 * 4)  # one more attempt while a's blocks are still held


def test_aborting_the_last_request_frees_the_finished_ones_too(profile):
    """Async scheduling defers a finished request's free to the next schedule; when an abort leaves nothing to
    schedule, vLLM's engine loop still processes the last step's outputs (``update_from_output``) before it idles, so
    no block stays held and ``reset_prefix_cache`` succeeds."""
    core = EngineCore(profile, num_blocks=100, block_size=16)
    core.add_request("a", prompt(100, 1), 1)  # finishes in its first step
    core.add_request("b", prompt(100, 2), 50)
    out = core.step(0.0)
    assert out.finished == {"a": "length"} and core.kv_usage > 0
    assert core.abort("b")
    assert core.kv_usage == 0 and core.reset_prefix_cache()
