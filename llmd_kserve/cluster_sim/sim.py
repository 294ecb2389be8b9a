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

With ``SimOptions.routers`` > 1 there are that many router replicas, each with its own scheduler, KV index and
scrapes, and a balancer in front (:mod:`llmd_kserve.cluster_sim.routers`); optionally they share their in-flight
load (:mod:`llmd_kserve.cluster_sim.shared_load`). ``sim.scheduler`` and ``sim.index`` are router 0's.

With engine roles (``SimOptions.roles``: ``prefill`` / ``decode`` / ``both``) and a P/D config, a scheduling result
that names a ``prefill`` endpoint goes through the P/D handoff instead (prefill leg, KV transfer, decode leg, or the
fallback to a local prefill): see :mod:`llmd_kserve.cluster_sim.pd`.

Finished requests feed ``Scheduler.on_complete`` and become :class:`~llmd_kserve.bench.stats.RequestResult` records
measured like the HTTP load generator measures them (TTFT from the router's receipt to the (decode leg's) first token, ITL between
tokens, cached tokens from the engine), so ``stats.summarize`` and the bench reports apply unchanged.
"""

from __future__ import annotations

import heapq
import logging
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from llmd_kserve.bench.stats import RequestResult
from llmd_kserve.bench.workloads import RequestSpec
from llmd_kserve.cluster_sim.accelerator import SharedAccelerators
from llmd_kserve.cluster_sim.autoscale import Autoscaler
from llmd_kserve.cluster_sim.engines import VirtualReplica, build_engines, engine_counters
from llmd_kserve.cluster_sim.events import (
    Arrive,
    Deliver,
    Event,
    LiveRequest,
    PrefillArrive,
    PrefillTimeout,
    ReplicaReady,
    ScalePoll,
    Scrape,
    Share,
    Step,
)
from llmd_kserve.cluster_sim.options import SimOptions, SimRun
from llmd_kserve.cluster_sim.pd import PDFlow
from llmd_kserve.cluster_sim.routers import Balancer, SimRouter
from llmd_kserve.cluster_sim.shared_load import SharedLoadView
from llmd_kserve.cluster_sim.tokens import PrefixTokenCache
from llmd_kserve.config.schema import SchedulerConfig
from llmd_kserve.engine_sim.core import EngineCore, StepOutput
from llmd_kserve.engine_sim.frontend import Frontend
from llmd_kserve.errors import NoEndpointError
from llmd_kserve.latency import LatencyProfile, load_profile
from llmd_kserve.scheduling.slo_admitter import SloUnmet
from llmd_kserve.types import PROFILE_LABEL, LLMRequest, Objective, RequestOutcome

log = logging.getLogger(__name__)

class ClusterSim:
    """``ClusterSim(config, options).run(requests) -> SimRun``: one run of one scheduler config on fresh engines."""

    def __init__(self, config: str | Path | SchedulerConfig, options: SimOptions | None = None) -> None:
        self.options = opt = options or SimOptions()
        self.profile = opt.profile if isinstance(opt.profile, LatencyProfile) else load_profile(opt.profile)
        self.now = 0.0
        delays = opt.router_kv_event_delays or (opt.kv_event_delay,) * opt.routers
        self.routers = [SimRouter(k, config, profile=self.profile, seed=opt.seed, clock=self._clock,
                                  kv_event_delay=delays[k]) for k in range(opt.routers)]
        self.scheduler = self.routers[0].scheduler
        self.index = self.routers[0].index
        self.uses_index = self.routers[0].uses_index
        self.balancer = Balancer(opt.balancer, opt.routers, opt.seed)
        roles = opt.engine_roles
        per_engine = [p if isinstance(p, LatencyProfile) else load_profile(p) for p in opt.engine_profiles or ()]
        labels = ([{PROFILE_LABEL: p} if isinstance(p, str) else {} for p in opt.engine_profiles]
                  if opt.engine_profiles and opt.label_profiles else None)
        self.scale = None if opt.autoscale is None else Autoscaler(self, opt.autoscale)
        """Replicas that start and stop (``SimOptions.autoscale``); None: a fixed set of engines."""
        if self.scale is not None and (opt.roles is not None or per_engine or opt.accelerators is not None):
            raise ValueError("autoscaling runs aggregated replicas of one profile (no roles, engine_profiles or "
                             "accelerators)")
        self.engines: list[VirtualReplica] = self.scale.build() if self.scale is not None else build_engines(
            per_engine or self.profile, roles, num_blocks=opt.num_blocks, max_num_seqs=opt.max_num_seqs,
            max_num_batched_tokens=opt.max_num_batched_tokens, seed=opt.seed, enable_kv_events=self.uses_index,
            labels=labels)
        for r in self.routers:
            r.attach(self.engines)
        self.index_of = {e.id: i for i, e in enumerate(self.engines)}
        self.frontends = [Frontend(self.profile) for _ in self.engines]  # the cluster profile's front end, as before
        self.tokens = PrefixTokenCache()
        self.pd = PDFlow(self)
        self.pd_cluster = any(r != "both" for r in roles)
        self._heap: list[tuple[float, int, Event]] = []
        self._seq = 0
        self._pending = 0
        """Events other than scrapes on the heap: none while requests remain means none of them can finish."""
        self._held: dict[str, float] = {}
        """Requests ``latency-slo-admitter`` holds back (``onMiss: queue``): request id -> first arrival."""
        self.accel = SharedAccelerators(opt.accelerators) if opt.accelerators is not None else None
        self.shared = (SharedLoadView(self.routers, opt.shared_load_delay, self.push, self._clock, opt.shared_plugins)
                       if opt.shared_load_delay is not None and opt.routers > 1 else None)
        self._router_of: dict[str, int] = {}
        """Requests held back by ``latency-slo-admitter``: request id -> the router replica holding it."""

    def _clock(self) -> float:
        return self.now

    def push(self, t: float, event: Event) -> None:
        """Schedule ``event`` at virtual time ``t`` (ties run in push order)."""
        heapq.heappush(self._heap, (t, self._seq, event))
        self._seq += 1
        self._pending += 1

    def core(self, i: int) -> EngineCore:
        """Engine ``i``'s core."""
        return self.engines[i].core

    def on_prefill_complete(self, rec: LiveRequest, outcome: RequestOutcome) -> None:
        """The prefill leg of ``rec`` ended (``Scheduler.on_prefill_complete`` of the router that scheduled it)."""
        self.routers[rec.router].scheduler.on_prefill_complete(rec.llm, rec.sched, outcome)
        if self.shared is not None:
            self.shared.prefill_completed(rec.router, rec.llm, rec.sched, outcome)

    def leg_delay(self, n_prompt: int, engine: int | None = None, t: float = 0.0) -> float:
        """Seconds from the router sending a request (or a P/D leg) at ``t`` until it is in ``engine``'s queue: the
        router's delay, then that engine's front end (``engine_sim.frontend``: one request at a time where the
        profile says so; call in send order)."""
        delay = self.options.router_delay
        if not self.options.frontend_overhead:
            return delay
        if engine is None or not self.profile.serial_frontend:  # each request's own overhead, summed as before
            return delay + self.profile.request_overhead(n_prompt)
        return self.frontends[engine].ready_at(t + delay, n_prompt) - t

    def kick(self, i: int, t: float) -> None:
        """Start engine ``i`` stepping at ``t`` unless a step is already in progress."""
        eng = self.engines[i]
        if eng.out is not None:
            return
        out = eng.core.step(t)
        if out.duration <= 0 and not out.new_tokens:  # nothing could run (cannot happen with a sane core)
            log.warning("engine %s made no progress at t=%.3f; idling it", eng.id, t)
            return
        eng.out = out
        if self.accel is None:
            self.push(out.now + out.duration, Step(i))
        else:  # replicas sharing a GPU: this step and its neighbours' end when their share of it allows
            for e, due in self.accel.start(i, t, out.duration):
                self.push(due, Step(e))

    # --- the loop ---------------------------------------------------------------------------------------------------
    def run(self, requests: Sequence[RequestSpec], concurrency: int | None = None,
            progress: Callable[[int, int], None] | None = None) -> SimRun:
        """Simulate ``requests``: open loop at their ``arrival_s``, or closed loop with ``concurrency`` in flight.
        ``progress(done, total)`` hears of finished requests (at most every 1% of them) for long runs."""
        engines, pd = self.engines, self.pd
        live: dict[str, LiveRequest] = {}
        results: list[RequestResult] = []
        backlog: deque[RequestSpec] = deque()
        self._heap, self._seq, self._pending, self._held, self._router_of = [], 0, 0, {}, {}
        push = self.push
        if concurrency:
            backlog.extend(requests)
            for _ in range(min(concurrency, len(backlog))):
                push(0.0, Arrive(backlog.popleft()))
        else:
            for spec in requests:
                push(spec.arrival_s or 0.0, Arrive(spec))
        heap = self._heap
        n_routers, interval = len(self.routers), self.options.scrape_interval
        for k in range(n_routers):  # seq -1-k: a scrape runs before anything else at the same time
            heapq.heappush(heap, (k * interval / n_routers, -1 - k, Scrape(k)))
        scale = self.scale
        if scale is not None:
            push(scale.options.poll_s, ScalePoll())
        remaining = total = len(requests)
        step = max(total // 100, 1)
        reported = total
        pop = heapq.heappop
        events = 0
        end = 0.0
        while heap and remaining:
            if progress is not None and reported - remaining >= step:
                reported = remaining
                progress(total - remaining, total)
            t, seq, event = pop(heap)
            self.now = t
            events += 1
            if seq >= 0:
                self._pending -= 1
            match event:
                case Step(i):
                    if self.accel is not None:
                        if not self.accel.is_due(i, t):
                            continue  # superseded: the accelerator's share changed since it was pushed
                        for e, due in self.accel.finish(i, t):
                            push(due, Step(e))
                    eng = engines[i]
                    out = eng.out
                    assert out is not None
                    eng.out = None
                    done = self._on_step(i, eng, out, t, live, results)
                    if done:  # before the next step, so that closed-loop arrivals keep their place
                        remaining, end = self._done(done, t, remaining, backlog), t
                    if eng.core.has_work():
                        self.kick(i, t)
                case Arrive(spec):
                    if scale is not None and scale.hold(spec, t):  # flow control: it waits at the router
                        continue
                    rec = self._route(spec, t, live, results)
                    if rec is None and spec.request_id in self._held:  # held back: it arrives again later
                        continue
                    if rec is None:  # rejected: counted as done
                        remaining, end = self._done(1, t, remaining, backlog), t
                    elif rec.sched.prefill is not None:
                        pd.start(rec, t)
                    else:
                        push(t + self.leg_delay(rec.n_prompt, rec.engine, t), Deliver(rec.spec.request_id))
                case Deliver(rid):
                    rec = live[rid]
                    core = engines[rec.engine].core
                    if rec.held is not None:  # P/D: the decode engine pulls the KV; the prefill engine frees its blocks
                        engines[rec.held[0]].core.release(rec.held[1])
                    try:
                        core.add_request(rid, rec.llm.token_ids or (), rec.llm.max_tokens, remote_kv=rec.held is not None)
                    except ValueError as exc:
                        self._fail(rec, t, str(exc), 400, live, results)
                        remaining, end = self._done(1, t, remaining, backlog), t
                    else:
                        self.kick(rec.engine, t)
                case Scrape(k):
                    if not self._pending:  # idle engines hold the remaining requests and nothing will wake them
                        self._stalled(t, live, results)
                        end = t
                        break
                    self.routers[k].scrape(engines, t)
                    if scale is not None and k == 0:
                        scale.on_scrape(t)
                    heapq.heappush(heap, (t + interval, -1 - k, event))
                case Share():
                    assert self.shared is not None
                    self.shared.apply(event)
                case PrefillArrive(rec):
                    pd.arrive(rec, t)
                case PrefillTimeout(rec):
                    pd.timeout(rec, t)
                case ScalePoll():
                    assert scale is not None
                    scale.poll(t)
                    push(t + scale.options.poll_s, ScalePoll())
                case ReplicaReady(i):
                    assert scale is not None
                    scale.ready(i, t)
        if progress is not None:
            progress(total - remaining, total)
        results.sort(key=lambda r: r.start)
        hit_rate, counters = engine_counters(engines)
        if self.pd_cluster or pd.transfers or pd.fallbacks:
            counters.update(pd.counters())
        return SimRun(results, end, hit_rate, counters, events, None if scale is None else scale.report(end))

    def _stalled(self, t: float, live: dict[str, LiveRequest], results: list[RequestResult]) -> None:
        """End a run in which no event is left that could finish the requests still live (an engine idled with work
        it could not schedule): they fail with status 500 instead of the loop scraping forever."""
        log.warning("simulation stalled at t=%.3f with %d requests unfinished (an engine made no progress); "
                    "they count as failed", t, len(live))
        for rec in list(live.values()):
            self._fail(rec, t, "stalled: the engine made no progress", 500, live, results)

    def _done(self, n: int, t: float, remaining: int, backlog: deque[RequestSpec]) -> int:
        """``n`` requests ended at ``t``: closed loop, as many from the backlog arrive; returns those remaining."""
        for _ in range(n):
            if backlog:
                self.push(t, Arrive(backlog.popleft()))
        return remaining - n

    def _on_step(self, i: int, eng: VirtualReplica, out: StepOutput, t: float, live: dict[str, LiveRequest],
                 results: list[RequestResult]) -> int:
        """Hand a finished step's tokens to their requests; returns how many requests finished."""
        if out.kv_events:
            for r in self.routers:
                r.send_kv(i, t, out.kv_events)
        for rid, n in out.cached_tokens.items():
            rec = live.get(rid)
            if rec is not None and rec.cached is None:
                rec.cached = n
        for rid in out.new_tokens:
            rec = live.get(rid)
            if rec is None:  # a P/D prefill leg: its one token is not the client's
                continue
            if rec.first is None:
                rec.first = t
            else:
                rec.itl.append(t - rec.last)
            rec.last = t
            rec.n_out += 1
        done = 0
        for rid in out.finished:
            rec = live.get(rid)
            if rec is None:  # a P/D prefill leg
                self.pd.finished(i, rid, t)
                continue
            del live[rid]
            done += 1
            first = rec.first if rec.first is not None else t
            extra: dict[str, Any] = {"predicted_cached_tokens": rec.sched.predicted_cached_tokens}
            if len(self.routers) > 1:
                extra["router"] = rec.router
            if self.pd_cluster:
                extra["prefill"] = rec.sched.prefill if rec.held is not None else None
                if rec.fallback is not None:
                    extra["pd_fallback"] = rec.fallback
            results.append(RequestResult(
                request_id=rec.spec.request_id, ok=True, start=rec.arrival, ttft=first - rec.arrival,
                e2e=t - rec.arrival, itl=tuple(rec.itl), output_tokens=rec.n_out, prompt_tokens=rec.n_prompt,
                cached_tokens=rec.cached, endpoint=eng.id, status=200, extra=extra))
            if self.scale is not None:
                self.scale.released(i, t, results[-1])
            self._complete(rec, RequestOutcome(
                ok=True, prompt_tokens=rec.n_prompt, cached_tokens=rec.cached, completion_tokens=rec.n_out))
        return done

    def _complete(self, rec: LiveRequest, outcome: RequestOutcome) -> None:
        """``Scheduler.on_complete`` of the router that scheduled ``rec`` (and the shared load view's release)."""
        self.routers[rec.router].scheduler.on_complete(rec.llm, rec.sched, outcome)
        if self.shared is not None:
            self.shared.completed(rec.router, rec.llm, rec.sched, outcome)

    def _route(self, spec: RequestSpec, t: float, live: dict[str, LiveRequest], results: list[RequestResult]) -> LiveRequest | None:
        k = self._router_of.pop(spec.request_id, None)
        router = self.routers[self.balancer.pick(spec) if k is None else k]
        if router.uses_index:
            router.apply_kv(self.engines, t)
        ids = tuple(self.tokens.encode(spec.prompt, spec.group or spec.session_id))
        arrived = self._held.pop(spec.request_id, t)
        objective = spec.objective
        if objective is not None and objective.ttft_s is not None and arrived < t:  # the wait counts against it
            objective = Objective(objective.priority, max(objective.ttft_s - (t - arrived), 1e-6), objective.tpot_s)
        llm = LLMRequest(request_id=spec.request_id, model=self.options.model,
                         body={"model": self.options.model, "prompt": spec.prompt, "max_tokens": spec.max_tokens},
                         kind=spec.kind, token_ids=ids, max_tokens=spec.max_tokens, session_id=spec.session_id,
                         objective=objective)
        try:
            sched = router.scheduler.schedule(llm, router.states if self.scale is None
                                              else self.scale.schedulable(router.states))
        except SloUnmet as exc:  # latency-slo-admitter: hold it back (and arrive again), or shed it (429)
            left = exc.max_wait_s - (t - arrived)
            if left > 1e-6:  # (a remainder below the clock's resolution would arrive again at the same time)
                self._held[spec.request_id] = arrived
                self._router_of[spec.request_id] = router.k
                self.push(t + max(min(exc.poll_s, left), 1e-6), Arrive(spec))
                return None
            results.append(RequestResult(request_id=spec.request_id, ok=False, start=arrived, prompt_tokens=len(ids),
                                         error=str(exc), status=429, shed=True))
            return None
        except NoEndpointError as exc:
            results.append(RequestResult(request_id=spec.request_id, ok=False, start=t, prompt_tokens=len(ids),
                                         error=str(exc), status=503, shed=True))
            return None
        rec = live[spec.request_id] = LiveRequest(spec, llm, sched, self.index_of[sched.target], arrived, len(ids),
                                                  router.k)
        if self.scale is not None:
            self.scale.routed(rec.engine, rec.n_prompt)
        return rec

    def _fail(self, rec: LiveRequest, t: float, error: str, status: int, live: dict[str, LiveRequest],
              results: list[RequestResult]) -> None:
        was_live = live.pop(rec.spec.request_id, None) is not None
        results.append(RequestResult(request_id=rec.spec.request_id, ok=False, start=rec.arrival,
                                     prompt_tokens=rec.n_prompt, endpoint=self.engines[rec.engine].id,
                                     error=error, status=status))
        if was_live and self.scale is not None:
            self.scale.released(rec.engine, t, results[-1])
        self._complete(rec, RequestOutcome(ok=False, prompt_tokens=rec.n_prompt))
