"""The simulated vLLM engine core: continuous batching with chunked prefill over a paged, prefix-cached KV pool.

Pure and clock-driven: no I/O, no threads, no wall clock. A driver (the HTTP server on the real clock, the cluster
simulator on a virtual one) owns time. API::

    core = EngineCore(profile, num_blocks=None, block_size=None, max_num_seqs=None, max_num_batched_tokens=None,
                      max_model_len=None, seed=0, event_sink=None, enable_kv_events=False,
                      async_scheduling=None, vllm_version=None)  # None: the profile's
    core.add_request(req_id, prompt_token_ids, max_tokens, *, output_len=None, hold_on_finish=False,
                     remote_kv=False)        # -> None; ValueError on misuse (duplicate id, too long, ...)
    out = core.step(now)                             # -> StepOutput: schedules one step and completes it at once
    # tokens in `out` exist at `now + out.duration`; call step() again at that time (not before)
    core.abort(req_id) -> bool                       # drop a waiting/running/held request, free its blocks
    core.release(req_id) -> bool                     # free the blocks a hold_on_finish request kept (P/D lease)
    core.reset_prefix_cache() -> bool                # AllBlocksCleared; refused while blocks are in use
    core.has_work() -> bool                          # anything waiting or running
    core.num_running, core.num_waiting, core.kv_usage, core.stats (EngineStats: counters for /metrics)
    core.held_blocks(req_id) -> list[int] | None     # block ids a finished hold_on_finish request keeps
    core.held_cached_tokens(req_id) -> int | None    # the prompt tokens it found cached
    core.block_hashes(token_ids) -> list[int]        # this engine's hashes of the full blocks of token_ids

Scheduling follows vLLM 0.26's v1 ``Scheduler.schedule`` (FCFS): each step first gives every running request its next
tokens (one for decode, the rest of its prompt for a chunked prefill) within ``max_num_batched_tokens``; when blocks
run out it preempts the newest running request (recompute: its blocks are freed tail-first, it goes back to the head
of the queue and re-prefills, hitting whatever of its prefix is still cached). Only when nothing was preempted are
waiting requests admitted, up to ``max_num_seqs``, each first matching its longest cached prefix (at most ``len - 1``
tokens, whole blocks); a request is admitted only if blocks for its whole sequence fit (vLLM's default
``scheduler_reserve_full_isl``), and the first one that does not fit stops admission for the step. The full blocks a
step will compute are registered in the prefix cache when the step is scheduled (``allocate_slots`` caches them),
so a request admitted later in the same step already hits them. The step's duration comes from
``profile.step_time``; the counters follow vLLM's (see ``EngineStats``). A request finishes after ``max_tokens``
outputs (reason ``length``) or after ``output_len`` (reason ``stop``, a simulated EOS). Output tokens are
deterministic in (seed, prompt), like greedy decoding. ``remote_kv=True`` means the prompt's KV arrived from a
prefill engine (P/D decode side): the request starts with its whole prompt computed but the last token, so its first
step is a one-token step. ``hold_on_finish=True`` (P/D prefill side) keeps the finished request's blocks until
``release``.

``vllm_version`` picks the rules where vLLM versions differ: "0.26" counts prefix-cache queries and hits at every
lookup of a waiting request, "0.32" once, when the request is admitted (``Scheduler.schedule``: "Record at admission
so unscheduled lookups are not counted"); on a P/D decode "0.32" counts the whole prompt as pulled (the
NixlConnector's ``get_num_new_matched_tokens`` returns the prompt length less the local hit), "0.26" all but the last
token. ``async_scheduling`` (vLLM 0.26's default on GPU; vLLM 0.32 turns it off on CPU; ``EngineCore.step_with_batch_queue`` with a batch queue of 2) schedules
step N+1 when step N is launched, before N's outputs are processed. So when steps run back to back (the last one left
work), a step admits only requests added before the previous ``step()`` call, and the requests that finished in the
previous step keep their blocks until this step has been scheduled. After an idle gap nothing lags. Not mirrored: a
request that stops early (simulated EOS) is not given the one wasted decode token vLLM schedules for it.

``profile.frontend_on_engine_core`` (a CPU replica whose API server, engine core and worker share one core): the
front-end work of a request added while the engine has work (``request_overhead`` of its prompt) ran on the engine's
core during a step, so it is added to the next step's duration; a request added to an idle engine costs the engine
nothing (its front-end latency is the driver's, see ``engine_sim.frontend``).

KV events (vLLM ``BlockStored``/``BlockRemoved``/``AllBlocksCleared`` structs from ``kvcache.events``) are built only
when ``enable_kv_events`` or ``event_sink`` is set; each step's events go to ``event_sink(events)`` once (one ZMQ
message per step, as vLLM publishes) and into ``StepOutput.kv_events``. Engine block hashes are 64-bit ints chained
over full blocks, seeded by ``seed`` (they need not match the router's keys).
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Callable, Sequence

from llmd_kserve.engine_sim.block_pool import BlockPool
from llmd_kserve.engine_sim.core_types import FIRST_ID, VOCAB, CoreRequest, EngineStats, StepOutput, extend_hashes
from llmd_kserve.kvcache.events import KVEvent
from llmd_kserve.latency import LatencyProfile, VllmVersion

__all__ = ["EngineCore", "EngineStats", "StepOutput"]


class EngineCore:
    """One simulated vLLM engine core (see the module docstring for the API and the scheduling rules)."""

    def __init__(
        self,
        profile: LatencyProfile,
        *,
        num_blocks: int | None = None,
        block_size: int | None = None,
        max_num_seqs: int | None = None,
        max_num_batched_tokens: int | None = None,
        max_model_len: int | None = None,
        seed: int = 0,
        event_sink: Callable[[list[KVEvent]], None] | None = None,
        enable_kv_events: bool = False,
        async_scheduling: bool | None = None,
        vllm_version: VllmVersion | None = None,
    ) -> None:
        self.profile = profile
        self.block_size = block_size or profile.block_size
        self.num_blocks = num_blocks or profile.num_gpu_blocks
        self.max_num_seqs = max_num_seqs or profile.max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens or profile.max_num_batched_tokens
        self.max_model_len = max_model_len or profile.max_model_len
        self.seed = seed
        self.event_sink = event_sink
        self.pool = BlockPool(self.num_blocks, self.block_size, enable_events=enable_kv_events or event_sink is not None)
        self.stats = EngineStats()
        self.waiting: deque[CoreRequest] = deque()
        self.running: list[CoreRequest] = []
        self.requests: dict[str, CoreRequest] = {}
        self.held: dict[str, CoreRequest] = {}
        self.async_scheduling = profile.async_scheduling if async_scheduling is None else async_scheduling
        self.vllm_version: VllmVersion = vllm_version or profile.vllm_version
        self._vllm_032 = self.vllm_version == "0.32"
        self._calls = 0  # step() calls so far; a request added after call k has epoch k
        self._pipelined = False  # the next step was scheduled while the last one ran (async scheduling)
        self._finishing: list[CoreRequest] = []  # finished in the last step; blocks freed after the next schedule
        self._host_debt = 0.0  # front-end seconds run on this core while it stepped (frontend_on_engine_core)

    # --- queries ------------------------------------------------------------------------------------------------
    @property
    def num_running(self) -> int:
        return len(self.running)

    @property
    def num_waiting(self) -> int:
        return len(self.waiting)

    @property
    def kv_usage(self) -> float:
        return self.pool.usage

    def has_work(self) -> bool:
        return bool(self.running or self.waiting)

    def held_blocks(self, req_id: str) -> list[int] | None:
        """Block ids a finished ``hold_on_finish`` request still keeps, or None."""
        req = self.held.get(req_id)
        return None if req is None else list(req.blocks)

    def held_cached_tokens(self, req_id: str) -> int | None:
        """Prompt tokens a finished ``hold_on_finish`` request found cached (vLLM's ``num_cached_tokens``), or None."""
        req = self.held.get(req_id)
        return None if req is None else req.cached_local + req.cached_external

    def block_hashes(self, token_ids: Sequence[int]) -> list[int]:
        """This engine's chained hashes of the full blocks of ``token_ids``."""
        out: list[int] = []
        extend_hashes(out, token_ids, self.block_size, self.seed, len(token_ids) // self.block_size)
        return out

    def cached_prefix_tokens(self, token_ids: Sequence[int]) -> int:
        """Prompt tokens of ``token_ids`` this engine holds as a cached prefix, in whole blocks, at most all but
        the last token (vLLM recomputes the last one): what a P/D transfer need not move."""
        bs = self.block_size
        return len(self.pool.lookup(self.block_hashes(token_ids), (len(token_ids) - 1) // bs)) * bs

    # --- requests -----------------------------------------------------------------------------------------------
    def add_request(
        self,
        req_id: str,
        prompt_token_ids: Sequence[int],
        max_tokens: int,
        *,
        output_len: int | None = None,
        hold_on_finish: bool = False,
        remote_kv: bool = False,
    ) -> None:
        """Queue a request (FCFS). Raises ValueError for a duplicate id, an empty prompt or one too long."""
        if req_id in self.requests or req_id in self.held:
            raise ValueError(f"duplicate request id {req_id!r}")
        n = len(prompt_token_ids)
        if n == 0:
            raise ValueError("prompt must have at least one token")
        if max_tokens < 1:
            raise ValueError("max_tokens must be >= 1")
        if n + max_tokens > self.max_model_len:
            raise ValueError(f"prompt ({n}) + max_tokens ({max_tokens}) exceeds max_model_len {self.max_model_len}")
        if -(-(n + max_tokens) // self.block_size) > self.pool.num_usable:
            raise ValueError("request needs more KV blocks than the engine has")
        out_len = max_tokens if output_len is None else max(1, min(output_len, max_tokens))
        req = CoreRequest(req_id, list(prompt_token_ids), max_tokens, out_len, hold_on_finish, remote_kv, self.seed,
                          self.block_size)
        req.epoch = self._calls
        if self.profile.frontend_on_engine_core and self.has_work():
            self._host_debt += self.profile.request_overhead(n)
        self.requests[req_id] = req
        self.waiting.append(req)

    def abort(self, req_id: str) -> bool:
        """Remove a request wherever it is and free its blocks; False if unknown."""
        req = self.requests.pop(req_id, None)
        if req is None:
            return self.release(req_id)
        if req in self.running:
            self.running.remove(req)
        else:
            with contextlib.suppress(ValueError):
                self.waiting.remove(req)
        self._free(req)
        if not self.has_work():  # nothing left to schedule: the last step's outputs are processed now
            self._pipelined = False
            self._free_finishing()
        return True

    def release(self, req_id: str) -> bool:
        """Free the blocks a finished ``hold_on_finish`` request kept; False if it holds none."""
        req = self.held.pop(req_id, None)
        if req is None:
            return False
        self._free(req)
        return True

    def reset_prefix_cache(self) -> bool:
        """Drop the whole prefix cache (emits ``AllBlocksCleared``); False while any block is in use."""
        ok = self.pool.reset()
        if ok:  # waiting requests hold no blocks (num_cached_blocks is 0), so none needs updating
            self._flush_events()
        return ok

    # --- the step -----------------------------------------------------------------------------------------------
    def step(self, now: float) -> StepOutput:
        """Schedule one step at ``now``, run it, and return its outputs (which exist at ``now + duration``)."""
        pool, bs = self.pool, self.block_size
        # async scheduling: a step that follows a busy one was scheduled when that one started, so requests added
        # since then wait one more step (vLLM EngineCore.step_with_batch_queue schedules before it blocks)
        admit_before = self._calls if self._pipelined else self._calls + 1
        self._calls += 1
        budget = self.max_num_batched_tokens
        sched: list[tuple[CoreRequest, int]] = []
        preempted: list[str] = []
        running = self.running
        i = 0
        while i < len(running) and budget > 0:
            req = running[i]
            num_new = len(req.tokens) - req.num_computed
            if num_new > budget:
                num_new = budget
            need = (req.num_computed + num_new + bs - 1) // bs - len(req.blocks)
            if need > 0:
                victim = None
                while pool.num_free < need:
                    victim = running.pop()
                    self._preempt(victim)
                    preempted.append(victim.id)
                    if victim is req:
                        break
                if victim is req:
                    break
                req.blocks.extend(pool.allocate(need))
            self._cache_scheduled(req, num_new)
            sched.append((req, num_new))
            budget -= num_new
            i += 1
        first: list[str] = []
        cached: dict[str, int] = {}
        if not preempted:
            self._admit(budget, sched, first, cached, admit_before)
        self._free_finishing()  # the last step's outputs are processed after this step was scheduled
        return self._run(now, sched, first, cached, preempted)

    def _admit(self, budget: int, sched: list[tuple[CoreRequest, int]], first: list[str], cached: dict[str, int],
               admit_before: int) -> None:
        pool, bs, waiting, running = self.pool, self.block_size, self.waiting, self.running
        while waiting and budget > 0 and len(running) < self.max_num_seqs:
            req = waiting[0]
            if req.epoch >= admit_before:
                break  # arrived after this step was scheduled (FCFS: everyone behind it arrived later still)
            total = len(req.tokens)
            hit = pool.lookup(req.hashes, (total - 1) // bs)
            # KV pulled from the prefill engine: only the last token to run
            computed = total - 1 if req.remote_kv and not req.scheduled else len(hit) * bs
            num_new = min(total - computed, budget)
            counted = req.num_preemptions == 0  # preempted requests' lookups stay out of the exported counters
            if counted and not self._vllm_032:  # 0.26 get_computed_blocks -> PrefixCacheStats.record
                self._count_lookup(total, len(hit) * bs)
            need = (computed + num_new + bs - 1) // bs - len(hit)
            # vLLM allocate_slots(full_sequence_must_fit=True): the whole sequence must fit, not just this chunk
            need_full = (total + bs - 1) // bs - len(hit)
            if max(need, need_full) > pool.num_free - pool.num_free_among(hit):
                break  # FCFS: the head does not fit, nobody behind it is tried this step
            if counted and self._vllm_032:  # 0.32 Scheduler.schedule -> record_prefix_cache_stats
                self._count_lookup(total, len(hit) * bs)
            waiting.popleft()
            pool.touch(hit)
            req.blocks = hit + pool.allocate(need)
            req.num_cached_blocks = len(hit)
            req.num_computed = computed
            if not req.scheduled:
                req.scheduled = True
                first.append(req.id)
                # like vLLM's num_cached_tokens: local prefix hits plus KV pulled from a remote prefill
                req.cached_local = len(hit) * bs
                # 0.32's NixlConnector pulls the whole prompt past the local hit; 0.26 counted all but the last token
                pulled = total if self._vllm_032 else computed
                req.cached_external = pulled - req.cached_local if req.remote_kv else 0
                cached[req.id] = req.cached_local + req.cached_external
            self._cache_scheduled(req, num_new)
            running.append(req)
            sched.append((req, num_new))
            budget -= num_new

    def _run(self, now: float, sched: list[tuple[CoreRequest, int]], first: list[str], cached: dict[str, int],
             preempted: list[str]) -> StepOutput:
        p_tok = p_ctx = p_attn = d_seqs = d_ctx = 0
        for req, n in sched:
            total = len(req.tokens)
            if n == 1 and total > req.num_prompt:
                d_seqs += 1
                d_ctx += total
            else:
                end = req.num_computed + n
                p_tok += n
                p_ctx += end
                p_attn += n * end
        duration = self.profile.step_time(p_tok, p_ctx, d_seqs, d_ctx, p_attn) + self._host_debt
        self._host_debt = 0.0
        stats = self.stats
        stats.num_steps += 1 if sched else 0
        stats.busy_time += duration
        stats.prefill_tokens_run += p_tok
        new_tokens: dict[str, int] = {}
        first_token: list[str] = []
        finished: dict[str, str] = {}
        for req, n in sched:
            req.num_computed += n
            if req.num_computed >= len(req.tokens):
                n_out = len(req.tokens) - req.num_prompt
                tok = FIRST_ID + (req.tok_a + n_out * req.tok_b) % (VOCAB - FIRST_ID)
                req.tokens.append(tok)
                new_tokens[req.id] = tok
                n_out += 1
                if n_out == 1:
                    first_token.append(req.id)
                    self._count_prompt(req)
                if n_out >= req.output_len:
                    finished[req.id] = "length" if n_out >= req.max_tokens else "stop"
        stats.generation_tokens += len(new_tokens)
        if finished:
            self.running = [r for r in self.running if r.id not in finished]
            for rid in finished:
                req = self.requests.pop(rid)
                if req.hold:
                    self.held[rid] = req
                else:
                    self._finishing.append(req)
        self._pipelined = self.async_scheduling and self.has_work()
        if not self._pipelined:  # idle next (or synchronous): the outputs are processed before anything is scheduled
            self._free_finishing()
        events = self._flush_events()
        return StepOutput(now, duration, new_tokens, tuple(first_token), finished, tuple(first), cached,
                          tuple(preempted), p_tok, d_seqs, tuple(events))

    # --- helpers ------------------------------------------------------------------------------------------------
    def _cache_scheduled(self, req: CoreRequest, num_new: int) -> None:
        """Register the full blocks this step will compute (vLLM ``KVCacheManager.allocate_slots`` ->
        ``cache_blocks(request, min(num_computed + num_new, num_tokens))``, at scheduling time, before the forward)."""
        full = min(req.num_computed + num_new, len(req.tokens)) // self.block_size
        if full > req.num_cached_blocks:
            self._cache(req, full)

    def _count_lookup(self, queries: int, hits: int) -> None:
        self.stats.prefix_queries += queries
        self.stats.prefix_hits += hits

    def _count_prompt(self, req: CoreRequest) -> None:
        """vLLM's ``PromptTokenStats`` for a request's first token: the whole prompt, split by source (the split of
        its first scheduling: ``prefill_stats`` is set only while ``num_preemptions == 0``)."""
        st = self.stats
        st.prompt_tokens += req.num_prompt
        st.prompt_tokens_local_hit += req.cached_local
        st.prompt_tokens_external += req.cached_external
        st.prompt_tokens_computed += req.num_prompt - req.cached_local - req.cached_external

    def _cache(self, req: CoreRequest, full: int) -> None:
        bs, hashes = self.block_size, req.hashes
        if len(hashes) < full:  # output tokens filled new blocks: extend the hash chain
            extend_hashes(hashes, req.tokens, bs, self.seed, full)
        lo = req.num_cached_blocks
        prev = hashes[lo - 1] if lo > 0 else None
        self.pool.cache_blocks(req.blocks[lo:full], hashes[lo:full], prev,
                               req.tokens[lo * bs : full * bs] if self.pool.enable_events else ())
        req.num_cached_blocks = full

    def _free_finishing(self) -> None:
        for req in self._finishing:
            self._free(req)
        self._finishing.clear()

    def _preempt(self, req: CoreRequest) -> None:
        self._free(req)
        req.num_computed = 0
        req.num_cached_blocks = 0
        req.num_preemptions += 1
        self.stats.num_preemptions += 1
        self.waiting.appendleft(req)

    def _free(self, req: CoreRequest) -> None:
        if req.blocks:
            self.pool.free(req.blocks[::-1])
            req.blocks = []

    def _flush_events(self) -> list[KVEvent]:
        if not self.pool.enable_events:
            return []
        events = self.pool.take_events()
        if events and self.event_sink is not None:
            self.event_sink(events)
        return events
