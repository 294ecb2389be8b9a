"""A plan's simulated runs: each deployment at a rate, once per seed, memoised; a run that can no longer meet the
SLO stops early.

A run stops as soon as more requests have missed the SLO than the attainment target allows (finished requests
that missed it, rejected ones, and requests still waiting for their first token past the TTFT target): an
overloaded deployment otherwise takes the longest to simulate and its exact attainment changes nothing. Its
``attainment`` is then an upper bound (``stopped_early``). A run also stops, as a miss, when an engine holds work
it cannot step (its KV cache too small for it) and nothing is left to happen but metrics scrapes: the simulation
would otherwise go on scraping for ever.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from llmd_kserve.bench.sim_configs import sim_config
from llmd_kserve.bench.stats import SLO, RequestResult, summarize
from llmd_kserve.bench.workloads import RequestSpec
from llmd_kserve.cluster_sim import ClusterSim, SimOptions, SimRun, pd_roles
from llmd_kserve.cluster_sim.events import Scrape
from llmd_kserve.plan.search import Deployment, Evaluation
from llmd_kserve.plan.workload import PlanWorkload

log = logging.getLogger(__name__)


class _Hopeless(Exception):
    """Raised inside a run once it cannot meet the SLO any more."""


class StoppingSim(ClusterSim):
    """A cluster simulation that gives up once more than ``allowed`` requests have missed ``slo``."""

    def __init__(self, config: Any, options: SimOptions, slo: SLO, allowed: int) -> None:
        super().__init__(config, options)
        self.slo, self.allowed = slo, allowed
        self.missed = 0
        self._seen = 0
        self._stalled: set[int] = set()
        """Engines that hold work but could not step when last kicked."""

    def kick(self, i: int, t: float) -> None:
        super().kick(i, t)
        eng = self.engines[i]
        if eng.out is None and eng.core.has_work():
            self._stalled.add(i)
            self._check_stuck()
        else:
            self._stalled.discard(i)

    def _check_stuck(self) -> None:
        """Give up when a stalled engine can never be woken: no step in flight, nothing queued but scrapes."""
        if any(i in self._stalled and self.engines[i].core.has_work() and self.engines[i].out is None
               for i in range(len(self.engines))) and all(isinstance(ev, Scrape) for _, _, ev in self._heap):
            raise _Hopeless

    def _on_step(self, i: int, eng: Any, out: Any, t: float, live: dict[str, Any],
                 results: list[RequestResult]) -> int:
        done = super()._on_step(i, eng, out, t, live, results)
        if self._stalled and not eng.core.has_work():
            self._check_stuck()
        if len(results) > self._seen:
            self.missed += sum(not self.slo.met(r) for r in results[self._seen:])
            self._seen = len(results)
            late = 0
            if self.slo.ttft is not None and self.missed + len(live) > self.allowed:
                late = sum(1 for rec in live.values() if rec.first is None and t - rec.arrival > self.slo.ttft)
            if self.missed + late > self.allowed:
                raise _Hopeless
        return done


class Simulations:
    """``sims(deployment, rate) -> Evaluation``: memoised runs, one per seed, stopping at the first failing seed
    (the worst seed decides, so the others cannot change the verdict)."""

    def __init__(self, workload: PlanWorkload, slo: SLO, attainment: float, *, profile: str, seeds: Sequence[int],
                 num_blocks: int | None, gpus_per_replica: float, early_stop: bool = True,
                 progress: Callable[[str, int, int], None] | None = None,
                 on_evaluation: Callable[[Evaluation], None] | None = None) -> None:
        self.workload, self.slo, self.attainment = workload, slo, attainment
        self.profile, self.seeds, self.num_blocks = profile, tuple(seeds), num_blocks
        self.gpus_per_replica, self.early_stop = gpus_per_replica, early_stop
        self.progress, self.on_evaluation = progress, on_evaluation
        self.done: dict[tuple[Deployment, float], Evaluation] = {}

    def __call__(self, dep: Deployment, rate: float) -> Evaluation:
        key = (dep, rate)
        if key not in self.done:
            self.done[key] = ev = self._evaluate(dep, rate)
            log.info("%s at %g/s: attainment %.3f (%s)", dep.label, rate, ev.attainment,
                     "meets" if ev.meets else "misses")
            if self.on_evaluation is not None:
                self.on_evaluation(ev)
        return self.done[key]

    def meets(self, dep: Deployment, rate: float) -> bool:
        return self(dep, rate).meets

    def _evaluate(self, dep: Deployment, rate: float) -> Evaluation:
        summaries: list[dict[str, Any]] = []
        att: list[float] = []
        stopped = False
        for seed in self.seeds:
            requests = self.workload.requests(rate, seed)
            run = self._run(dep, rate, seed, requests)
            if run is None:  # stopped early: an upper bound of its attainment
                att.append(1.0 - (int(len(requests) * (1.0 - self.attainment)) + 1) / len(requests))
                stopped = True
                break
            s = summarize(run.results, run.wall_s, self.slo, engine_hit_rate=run.engine_hit_rate)
            summaries.append(s)
            att.append(s["slo_attainment"] or 0.0)
            if att[-1] < self.attainment:
                break
        return Evaluation(dep, rate, dep.replicas * self.gpus_per_replica, min(att),
                          not stopped and min(att) >= self.attainment, _worst(summaries, "ttft_p90"),
                          _worst(summaries, "tpot_p90"), _mean(summaries, "goodput_rps"),
                          _mean(summaries, "cache_hit_rate"), tuple(self.seeds[:len(att)]), tuple(att), stopped)

    def _run(self, dep: Deployment, rate: float, seed: int, requests: list[RequestSpec]) -> SimRun | None:
        roles = pd_roles(dep.prefill, dep.decode) if dep.prefill else None
        opts = SimOptions(engines=dep.replicas, roles=roles, profile=self.profile, num_blocks=self.num_blocks,
                          seed=seed)
        allowed = int(len(requests) * (1.0 - self.attainment)) if self.early_stop else len(requests)
        sim = StoppingSim(sim_config(dep.config), opts, self.slo, allowed)
        tick = None if self.progress is None else partial(self.progress, f"{dep.label} @ {rate:g}/s seed {seed}")
        try:
            return sim.run(requests, progress=tick)
        except _Hopeless:
            if tick is not None:
                tick(len(requests), len(requests))
            return None


def _worst(summaries: Sequence[dict[str, Any]], key: str) -> float | None:
    xs = [s[key] for s in summaries if s.get(key) is not None]
    return max(xs) if xs else None


def _mean(summaries: Sequence[dict[str, Any]], key: str) -> float | None:
    xs = [s[key] for s in summaries if s.get(key) is not None]
    return sum(xs) / len(xs) if xs else None
