"""Virtual-time cluster with P/D roles: engine cores as prefill/decode/both replicas, the real scheduler, the handoff.

The same event model as :mod:`llmd_kserve.cluster_sim` (arrivals, deliveries after the router hop and the engine's
front end, engine steps, KV events reaching the real index after a delay, metrics snapshots every scrape interval),
plus the P/D handoff when the scheduler names a prefill endpoint:

* the prefill leg reaches the prefill engine (``max_tokens: 1``, blocks held: ``hold_on_finish``);
* when it finishes, the prefill leg's in-flight charge is released (as the router's orchestrator does) and the decode
  leg reaches the decode engine after the router hop, the decode front end and the KV transfer of the prompt tokens
  the decode engine does not already cache (``profile.kv_transfer_time``); it starts with the prompt computed
  (``remote_kv``) and the prefill engine frees its blocks (the pull).

TTFT is measured from arrival to the decode leg's first token, ITL between decode tokens, like the HTTP load
generator measures a live stack. Use::

    PDClusterSim("pd-predicted-ttft", PDSimOptions(roles=("prefill", "prefill", "decode", "decode"))).run(requests)
"""

from __future__ import annotations

import heapq
import random
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from llmd_kserve.bench.stats import RequestResult
from llmd_kserve.bench.workloads import RequestSpec
from llmd_kserve.cluster_sim.sim import SimRun
from llmd_kserve.cluster_sim.tokens import PrefixTokenCache
from llmd_kserve.config.schema import SchedulerConfig
from llmd_kserve.engine_sim.core import EngineCore, StepOutput
from llmd_kserve.engine_sim.profile import DEFAULT_PROFILE, LatencyProfile, load_profile
from llmd_kserve.errors import NoEndpointError
from llmd_kserve.kvcache.index import KVIndex
from llmd_kserve.scheduling.scheduler import PluginContext, Scheduler, SchedulingResult
from llmd_kserve.tokenizer import SimTokenizer
from llmd_kserve.types import Endpoint, EndpointId, EndpointMetrics, EndpointState, LLMRequest, RequestOutcome, Role

_ARRIVE, _PREFILL, _DECODE, _STEP, _SCRAPE = 0, 1, 2, 3, 4
_P = "@prefill"


@dataclass(frozen=True, slots=True)
class PDSimOptions:
    """The simulated cluster: one role per engine, and the latencies of the router's view of it."""

    roles: tuple[Role, ...] = ("prefill", "prefill", "decode", "decode")
    profile: str | LatencyProfile = DEFAULT_PROFILE
    num_blocks: int | None = None
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    kv_link_gbps: float | None = None
    """P/D transfer bandwidth in GB/s (None: the profile's)."""
    scrape_interval: float = 0.05
    kv_event_delay: float = 0.001
    router_delay: float = 0.001
    """Router hop before each leg reaches an engine."""
    model: str = "llama-8b-shape"
    seed: int = 0


class _Rec:
    __slots__ = ("spec", "llm", "sched", "arrival", "n_prompt", "first", "last", "itl", "n_out", "cached", "held")

    def __init__(self, spec: RequestSpec, llm: LLMRequest, sched: SchedulingResult, arrival: float, n: int) -> None:
        self.spec, self.llm, self.sched, self.arrival, self.n_prompt = spec, llm, sched, arrival, n
        self.first: float | None = None
        self.last = arrival
        self.itl: list[float] = []
        self.n_out = 0
        self.cached: int | None = None
        self.held: tuple[int, str] | None = None  # (prefill engine, prefill leg id) whose blocks the decode pulls


class _Engine:
    __slots__ = ("id", "endpoint", "core", "out", "kv", "state")

    def __init__(self, eid: EndpointId, role: Role, core: EngineCore) -> None:
        self.id, self.core = eid, core
        self.endpoint = Endpoint(eid, role, None)
        self.out: StepOutput | None = None
        self.kv: deque[tuple[float, tuple]] = deque()
        self.state = EndpointState(self.endpoint, EndpointMetrics(block_size=core.block_size,
                                                                  num_gpu_blocks=core.num_blocks, stale=False))


class PDClusterSim:
    """``PDClusterSim(config, options).run(requests) -> SimRun``: one run of one config on fresh engines."""

    def __init__(self, config: str | Path | SchedulerConfig, options: PDSimOptions | None = None) -> None:
        self.options = opt = options or PDSimOptions()
        self.profile = opt.profile if isinstance(opt.profile, LatencyProfile) else load_profile(opt.profile)
        self.now = 0.0
        self.index = KVIndex()
        ctx = PluginContext(tokenizer=SimTokenizer(), index=self.index, rng=random.Random(opt.seed),
                            clock=lambda: self.now, profile=self.profile, block_size=self.profile.block_size)
        self.scheduler = Scheduler.from_config(config, ctx)
        self.uses_index = any(p.type == "precise-prefix-producer" for p in self.scheduler.producers)
        self.engines = [
            _Engine(EndpointId(f"http://sim-{role}-{i}:8000"), role,
                    EngineCore(self.profile, num_blocks=opt.num_blocks, max_num_seqs=opt.max_num_seqs,
                               max_num_batched_tokens=opt.max_num_batched_tokens, seed=opt.seed + i,
                               enable_kv_events=self.uses_index))
            for i, role in enumerate(opt.roles)
        ]
        self._by_id = {e.id: i for i, e in enumerate(self.engines)}
        self.tokens = PrefixTokenCache()
        self.transfers: list[float] = []
        """Modelled KV transfer time of each disaggregated request."""

    def run(self, requests: Sequence[RequestSpec]) -> SimRun:
        """Simulate ``requests`` open loop at their ``arrival_s``."""
        opt, engines, prof = self.options, self.engines, self.profile
        heap: list[tuple[float, int, int, object]] = [(s.arrival_s or 0.0, i, _ARRIVE, s)
                                                      for i, s in enumerate(requests)]
        heapq.heapify(heap)
        heapq.heappush(heap, (0.0, -1, _SCRAPE, None))
        seq = len(requests)
        live: dict[str, _Rec] = {}
        results: list[RequestResult] = []
        remaining, events, end = len(requests), 0, 0.0

        def push(t: float, kind: int, arg: object) -> None:
            nonlocal seq
            heapq.heappush(heap, (t, seq, kind, arg))
            seq += 1

        def start(i: int, t: float) -> None:
            eng = engines[i]
            out = eng.core.step(t)
            if out.duration <= 0 and not out.new_tokens:
                eng.out = None
                return
            eng.out = out
            push(out.now + out.duration, _STEP, i)

        while heap and remaining:
            t, _, kind, arg = heapq.heappop(heap)
            self.now = t
            events += 1
            if kind == _STEP:
                i: int = arg  # type: ignore[assignment]
                out = engines[i].out
                assert out is not None
                done = self._on_step(i, out, t, live, results, push)
                if done:
                    remaining -= done
                    end = t
                if engines[i].core.has_work():
                    start(i, t)
                else:
                    engines[i].out = None
            elif kind == _ARRIVE:
                rec = self._route(arg, t, live, results)  # type: ignore[arg-type]
                if rec is None:
                    remaining -= 1
                    end = t
                    continue
                push(t + opt.router_delay + prof.request_overhead(rec.n_prompt),
                     _PREFILL if rec.sched.prefill else _DECODE, rec.spec.request_id)
            elif kind in (_PREFILL, _DECODE):
                rid: str = arg  # type: ignore[assignment]
                rec = live[rid]
                if kind == _PREFILL:
                    j = self._by_id[rec.sched.prefill]  # type: ignore[index]
                    engines[j].core.add_request(rid + _P, rec.llm.token_ids or (), 1, hold_on_finish=True, now=t)
                else:
                    j = self._by_id[rec.sched.target]
                    if rec.held is not None:  # the pull: the prefill engine frees the request's blocks
                        engines[rec.held[0]].core.release(rec.held[1])
                    engines[j].core.add_request(rid, rec.llm.token_ids or (), rec.llm.max_tokens,
                                                remote_kv=rec.held is not None, now=t)
                if engines[j].out is None:
                    start(j, t)
            else:
                for eng in engines:
                    core, st = eng.core, eng.core.stats
                    eng.state = EndpointState(eng.endpoint, EndpointMetrics(
                        waiting=core.num_waiting, running=core.num_running, kv_usage=core.kv_usage,
                        block_size=core.block_size, num_gpu_blocks=core.num_blocks,
                        prefix_queries=float(st.prefix_queries), prefix_hits=float(st.prefix_hits),
                        scraped_at=t, stale=False))
                push(t + opt.scrape_interval, _SCRAPE, None)
        results.sort(key=lambda r: r.start)
        q = sum(e.core.stats.prefix_queries for e in engines)
        h = sum(e.core.stats.prefix_hits for e in engines)
        counters = {"prefix_cache_queries": float(q), "prefix_cache_hits": float(h),
                    "preemptions": float(sum(e.core.stats.num_preemptions for e in engines)),
                    "disaggregated": float(len(self.transfers)),
                    "kv_transfer_s": sum(self.transfers)}
        return SimRun(results, end, h / q if q else None, counters, events)

    def _on_step(self, i: int, out: StepOutput, t: float, live: dict[str, _Rec], results: list[RequestResult],
                 push) -> int:  # noqa: ANN001 - local closure
        eng, opt, prof = self.engines[i], self.options, self.profile
        if out.kv_events:
            eng.kv.append((t + opt.kv_event_delay, out.kv_events))
        for rid, n in out.cached_tokens.items():
            rec = live.get(rid)
            if rec is not None and rec.cached is None:
                rec.cached = n
        for rid in out.new_tokens:
            if rid.endswith(_P):
                continue
            rec = live[rid]
            if rec.first is None:
                rec.first = t
            else:
                rec.itl.append(t - rec.last)
            rec.last = t
            rec.n_out += 1
        done = 0
        for rid in out.finished:
            if rid.endswith(_P):  # prefill leg done: release its charge, hand the KV to the decode engine
                rec = live[rid[: -len(_P)]]
                rec.held = (i, rid)
                dec = self.engines[self._by_id[rec.sched.target]].core
                tokens = rec.llm.token_ids or ()
                local = len(dec.pool.lookup(dec.block_hashes(tokens), (len(tokens) - 1) // dec.block_size))
                xfer = prof.kv_transfer_time(len(tokens) - local * dec.block_size, opt.kv_link_gbps)
                self.transfers.append(xfer)
                self.scheduler.on_complete(rec.llm, replace(rec.sched, target=rec.sched.prefill, prefill=None),
                                           RequestOutcome(ok=True, prompt_tokens=rec.n_prompt))
                push(t + opt.router_delay + prof.request_overhead(rec.n_prompt) + xfer, _DECODE, rec.spec.request_id)
                continue
            rec = live.pop(rid)
            done += 1
            results.append(RequestResult(
                request_id=rec.spec.request_id, ok=True, start=rec.arrival, ttft=(rec.first or t) - rec.arrival,
                e2e=t - rec.arrival, itl=tuple(rec.itl), output_tokens=rec.n_out, prompt_tokens=rec.n_prompt,
                cached_tokens=rec.cached, endpoint=eng.id, status=200,
                extra={"prefill": rec.sched.prefill, "group": rec.spec.group}))
            self.scheduler.on_complete(rec.llm, rec.sched, RequestOutcome(
                ok=True, prompt_tokens=rec.n_prompt, cached_tokens=rec.cached, completion_tokens=rec.n_out))
        return done

    def _route(self, spec: RequestSpec, t: float, live: dict[str, _Rec], results: list[RequestResult]) -> _Rec | None:
        if self.uses_index:
            for eng in self.engines:
                while eng.kv and eng.kv[0][0] <= t:
                    self.index.apply(eng.id, eng.kv.popleft()[1])
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
        rec = live[spec.request_id] = _Rec(spec, llm, sched, t, len(ids))
        return rec
