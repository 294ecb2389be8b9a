"""The virtual-time cluster: simulated engine cores, the real scheduler and plugins, one discrete-event loop.

What a live stack does over HTTP and ZMQ happens here as events on one heap, ordered by virtual time:

* **arrival** - a workload request reaches the router at its ``arrival_s`` (or, closed loop, when a slot frees):
  due KV events are applied to the real :class:`~llmd_kserve.kvcache.index.KVIndex`, the real
  :class:`~llmd_kserve.scheduling.scheduler.Scheduler` picks an endpoint from the latest metrics snapshots;
* **deliver** - the request reaches the chosen engine after the router hop plus the engine front-end's latency
  (``profile.request_overhead``: HTTP, tokenization, hashing in vLLM), and joins its core's waiting queue;
* **step** - an engine core runs one step (``EngineCore.step``) whose tokens exist ``duration`` later; then it steps
  again while it has work. Its KV events reach the index ``kv_event_delay`` after the step ends (ZMQ latency);
* **scrape** - every ``scrape_interval`` each engine's counters become a fresh ``EndpointState`` (like the live
  scraper's 50 ms poll), so the scheduler sees load with the same lag as in a live router.

Finished requests feed ``Scheduler.on_complete`` and become :class:`~llmd_kserve.bench.stats.RequestResult` records
measured like the HTTP load generator measures them (TTFT from the router's receipt to the first token, ITL between
tokens, cached tokens from the engine), so ``stats.summarize`` and the bench reports apply unchanged.
"""

from __future__ import annotations

import heapq
import logging
import random
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from llmd_kserve.bench.stats import RequestResult
from llmd_kserve.bench.workloads import RequestSpec
from llmd_kserve.cluster_sim.tokens import PrefixTokenCache
from llmd_kserve.config.schema import SchedulerConfig
from llmd_kserve.engine_sim.core import EngineCore, StepOutput
from llmd_kserve.engine_sim.profile import DEFAULT_PROFILE, LatencyProfile, load_profile
from llmd_kserve.errors import NoEndpointError
from llmd_kserve.kvcache.index import KVIndex
from llmd_kserve.scheduling.scheduler import PluginContext, Scheduler, SchedulingResult
from llmd_kserve.tokenizer import SimTokenizer
from llmd_kserve.types import Endpoint, EndpointId, EndpointMetrics, EndpointState, LLMRequest, RequestOutcome

log = logging.getLogger(__name__)

_ARRIVE, _DELIVER, _STEP, _SCRAPE = 0, 1, 2, 3


@dataclass(frozen=True, slots=True)
class SimOptions:
    """The simulated cluster: engine count and shape, and the latencies of the router's view of it."""

    engines: int = 8
    profile: str | LatencyProfile = DEFAULT_PROFILE
    num_blocks: int | None = None
    """KV blocks per engine (None: the profile's ``num_gpu_blocks``)."""
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    scrape_interval: float = 0.05
    """Seconds between metrics snapshots (the live scraper's default poll)."""
    kv_event_delay: float = 0.001
    """Seconds from a step's end until its KV events are in the router's index."""
    router_delay: float = 0.001
    """Seconds the router hop adds before the engine sees a request (parse, tokenize, schedule, connect)."""
    frontend_overhead: bool = True
    """Add the profile's per-request front-end latency (vLLM's HTTP + tokenization) before the engine queue."""
    model: str = "llama-8b-shape"
    seed: int = 0


@dataclass(frozen=True, slots=True)
class SimRun:
    """One simulated run: per-request results (arrival order), its length, and engine-side counters."""

    results: list[RequestResult]
    wall_s: float
    engine_hit_rate: float | None
    engine_counters: dict[str, float]
    events: int
    """Events processed (arrivals, deliveries, steps, scrapes)."""


class _Live:
    """A request between its arrival and its last token."""

    __slots__ = ("spec", "llm", "sched", "engine", "arrival", "first", "last", "itl", "n_out", "cached", "n_prompt")

    def __init__(self, spec: RequestSpec, llm: LLMRequest, sched: SchedulingResult, engine: int, arrival: float,
                 n_prompt: int) -> None:
        self.spec, self.llm, self.sched, self.engine, self.arrival = spec, llm, sched, engine, arrival
        self.first: float | None = None
        self.last = arrival
        self.itl: list[float] = []
        self.n_out = 0
        self.cached: int | None = None
        self.n_prompt = n_prompt


class _Engine:
    __slots__ = ("id", "endpoint", "core", "out", "kv", "state")

    def __init__(self, eid: EndpointId, core: EngineCore) -> None:
        self.id = eid
        self.endpoint = Endpoint(eid, "both", None)
        self.core = core
        self.out: StepOutput | None = None  # the step in progress (None: idle)
        self.kv: deque[tuple[float, tuple]] = deque()  # (time visible in the index, events)
        self.state = EndpointState(self.endpoint, EndpointMetrics(block_size=core.block_size,
                                                                  num_gpu_blocks=core.num_blocks, stale=False))


class ClusterSim:
    """``ClusterSim(config, options).run(requests) -> SimRun``: one run of one scheduler config on fresh engines."""

    def __init__(self, config: str | Path | SchedulerConfig, options: SimOptions | None = None) -> None:
        self.options = opt = options or SimOptions()
        self.profile = opt.profile if isinstance(opt.profile, LatencyProfile) else load_profile(opt.profile)
        self.now = 0.0
        self.index = KVIndex()
        ctx = PluginContext(tokenizer=SimTokenizer(), index=self.index, rng=random.Random(opt.seed),
                            clock=self._clock, profile=self.profile, block_size=self.profile.block_size)
        self.scheduler = Scheduler.from_config(config, ctx)
        self.uses_index = any(p.type == "precise-prefix-producer" for p in self.scheduler.producers)
        self.engines = [
            _Engine(EndpointId(f"http://sim-engine-{i}:8000"),
                    EngineCore(self.profile, num_blocks=opt.num_blocks, max_num_seqs=opt.max_num_seqs,
                               max_num_batched_tokens=opt.max_num_batched_tokens, seed=opt.seed + i,
                               enable_kv_events=self.uses_index))
            for i in range(opt.engines)
        ]
        self._by_id = {e.id: i for i, e in enumerate(self.engines)}
        self.tokens = PrefixTokenCache()

    def _clock(self) -> float:
        return self.now

    # --- the loop ---------------------------------------------------------------------------------------------------
    def run(self, requests: Sequence[RequestSpec], concurrency: int | None = None) -> SimRun:
        """Simulate ``requests``: open loop at their ``arrival_s``, or closed loop with ``concurrency`` in flight."""
        opt, engines = self.options, self.engines
        heap: list[tuple[float, int, int, object]] = []
        seq = 0
        live: dict[str, _Live] = {}
        results: list[RequestResult] = []
        backlog: deque[RequestSpec] = deque()
        if concurrency:
            backlog.extend(requests)
            for _ in range(min(concurrency, len(backlog))):
                heap.append((0.0, seq, _ARRIVE, backlog.popleft()))
                seq += 1
        else:
            for spec in requests:
                heap.append((spec.arrival_s or 0.0, seq, _ARRIVE, spec))
                seq += 1
        heapq.heapify(heap)
        heapq.heappush(heap, (0.0, -1, _SCRAPE, None))
        remaining = len(requests)
        push, pop = heapq.heappush, heapq.heappop
        events = 0
        end = 0.0
        while heap and remaining:
            t, _, kind, arg = pop(heap)
            self.now = t
            events += 1
            if kind == _STEP:
                eng = engines[arg]  # type: ignore[index]
                out = eng.out
                assert out is not None
                done = self._deliver(eng, out, t, live, results)
                if done:
                    remaining -= done
                    end = t
                    for _ in range(done):
                        if backlog:
                            push(heap, (t, seq, _ARRIVE, backlog.popleft()))
                            seq += 1
                if eng.core.has_work():
                    seq = self._start_step(eng, arg, t, heap, seq)  # type: ignore[arg-type]
                else:
                    eng.out = None
            elif kind == _ARRIVE:
                spec: RequestSpec = arg  # type: ignore[assignment]
                target = self._route(spec, t, live, results)
                if target is None:  # rejected: counted as done
                    remaining -= 1
                    end = t
                    if backlog:
                        push(heap, (t, seq, _ARRIVE, backlog.popleft()))
                        seq += 1
                    continue
                rec = live[spec.request_id]
                delay = opt.router_delay
                if opt.frontend_overhead:
                    delay += self.profile.request_overhead(rec.n_prompt)
                push(heap, (t + delay, seq, _DELIVER, spec.request_id))
                seq += 1
            elif kind == _DELIVER:
                rid: str = arg  # type: ignore[assignment]
                rec = live[rid]
                eng = engines[rec.engine]
                try:
                    eng.core.add_request(rid, rec.llm.token_ids or (), rec.llm.max_tokens, now=t)
                except ValueError as exc:
                    self._fail(rec, t, str(exc), 400, live, results)
                    remaining -= 1
                    end = t
                    continue
                if eng.out is None:
                    seq = self._start_step(eng, rec.engine, t, heap, seq)
            else:  # scrape
                for eng in engines:
                    core = eng.core
                    st = core.stats
                    eng.state = EndpointState(eng.endpoint, EndpointMetrics(
                        waiting=core.num_waiting, running=core.num_running, kv_usage=core.kv_usage,
                        block_size=core.block_size, num_gpu_blocks=core.num_blocks,
                        prefix_queries=float(st.prefix_queries), prefix_hits=float(st.prefix_hits),
                        scraped_at=t, stale=False))
                push(heap, (t + opt.scrape_interval, -1, _SCRAPE, None))
        results.sort(key=lambda r: r.start)
        q = sum(e.core.stats.prefix_queries for e in engines)
        h = sum(e.core.stats.prefix_hits for e in engines)
        counters = {"prefix_cache_queries": float(q), "prefix_cache_hits": float(h),
                    "preemptions": float(sum(e.core.stats.num_preemptions for e in engines)),
                    "steps": float(sum(e.core.stats.num_steps for e in engines)),
                    "busy_s": sum(e.core.stats.busy_time for e in engines)}
        return SimRun(results, end, h / q if q else None, counters, events)

    def _start_step(self, eng: _Engine, i: int, t: float, heap: list, seq: int) -> int:
        out = eng.core.step(t)
        if out.duration <= 0 and not out.new_tokens:  # nothing could run (cannot happen with a sane core)
            log.warning("engine %s made no progress at t=%.3f; idling it", eng.id, t)
            eng.out = None
            return seq
        eng.out = out
        heapq.heappush(heap, (out.now + out.duration, seq, _STEP, i))
        return seq + 1

    def _deliver(self, eng: _Engine, out: StepOutput, t: float, live: dict[str, _Live],
                 results: list[RequestResult]) -> int:
        """Hand a finished step's tokens to their requests; returns how many requests finished."""
        if out.kv_events:
            eng.kv.append((t + self.options.kv_event_delay, out.kv_events))
        for rid, n in out.cached_tokens.items():
            rec = live.get(rid)
            if rec is not None and rec.cached is None:
                rec.cached = n
        for rid in out.new_tokens:
            rec = live[rid]
            if rec.first is None:
                rec.first = t
            else:
                rec.itl.append(t - rec.last)
            rec.last = t
            rec.n_out += 1
        for rid in out.finished:
            rec = live.pop(rid)
            first = rec.first if rec.first is not None else t
            results.append(RequestResult(
                request_id=rec.spec.request_id, ok=True, start=rec.arrival, ttft=first - rec.arrival,
                e2e=t - rec.arrival, itl=tuple(rec.itl), output_tokens=rec.n_out, prompt_tokens=rec.n_prompt,
                cached_tokens=rec.cached, endpoint=eng.id, status=200,
                extra={"predicted_cached_tokens": rec.sched.predicted_cached_tokens}))
            self.scheduler.on_complete(rec.llm, rec.sched, RequestOutcome(
                ok=True, prompt_tokens=rec.n_prompt, cached_tokens=rec.cached, completion_tokens=rec.n_out))
        return len(out.finished)

    def _route(self, spec: RequestSpec, t: float, live: dict[str, _Live], results: list[RequestResult]) -> int | None:
        if self.uses_index:
            for eng in self.engines:
                kv = eng.kv
                while kv and kv[0][0] <= t:
                    self.index.apply(eng.id, kv.popleft()[1])
        ids = tuple(self.tokens.encode(spec.prompt, spec.group or spec.session_id))
        llm = LLMRequest(request_id=spec.request_id, model=self.options.model,
                         body={"model": self.options.model, "prompt": spec.prompt, "max_tokens": spec.max_tokens},
                         kind=spec.kind, token_ids=ids, max_tokens=spec.max_tokens, session_id=spec.session_id)
        try:
            sched = self.scheduler.schedule(llm, [e.state for e in self.engines])
        except NoEndpointError as exc:
            results.append(RequestResult(request_id=spec.request_id, ok=False, start=t, prompt_tokens=len(ids),
                                         error=str(exc), status=503, shed=True))
            return None
        i = self._by_id[sched.target]
        live[spec.request_id] = _Live(spec, llm, sched, i, t, len(ids))
        return i

    def _fail(self, rec: _Live, t: float, error: str, status: int, live: dict[str, _Live],
              results: list[RequestResult]) -> None:
        live.pop(rec.spec.request_id, None)
        results.append(RequestResult(request_id=rec.spec.request_id, ok=False, start=rec.arrival,
                                     prompt_tokens=rec.n_prompt, endpoint=self.engines[rec.engine].id,
                                     error=error, status=status))
        self.scheduler.on_complete(rec.llm, rec.sched, RequestOutcome(ok=False, prompt_tokens=rec.n_prompt))
