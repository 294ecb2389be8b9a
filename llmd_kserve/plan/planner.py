"""``plan(...)``: the smallest deployment meeting an SLO for a workload at a target rate, from cluster simulations."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from llmd_kserve.bench.stats import SLO
from llmd_kserve.defaults import DEFAULT_PROFILE, PD_SHIPPED_CONFIGS, SHIPPED_CONFIGS
from llmd_kserve.errors import ConfigError, LlmdError
from llmd_kserve.plan.runs import Simulations
from llmd_kserve.plan.search import Deployment, Evaluation, pd_frontier, per_form_best, rank_key, smallest
from llmd_kserve.plan.workload import PlanWorkload

log = logging.getLogger(__name__)

CONFIGS = ("default", "round-robin")
"""Aggregated router configs searched by default."""
PD_CONFIGS = ("pd-predicted-ttft",)
"""P/D router configs searched by default."""
REFERENCE = ("round-robin",)
"""Configs searched and shown for comparison, never chosen as the plan (a cache-blind router's cost)."""
ATTAINMENT = 0.95
HEADROOM_FACTORS = (1.25, 1.5, 2.0)
"""Rate multiples tried (in order, up to the first failure) for the plan's headroom, then one bisection step."""

class PlanUnreachable(LlmdError):
    """No deployment within the search's bounds meets the SLO; ``best`` is the closest one found."""

    def __init__(self, message: str, best: Evaluation | None) -> None:
        self.best = best
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class Plan:
    """The plan: its deployment and margin, the next-best option of every form, and every run it took."""

    workload: str
    rate: float
    slo: SLO
    attainment_target: float
    profile: str
    gpus_per_replica: float
    best: Evaluation
    headroom_rate: float | None
    """The highest rate (req/s) the plan was seen to meet the SLO at (None: not measured)."""
    options: list[Evaluation]
    """The best passing deployment of each (config, P:D ratio), cheapest first; ``options[0]`` may be a reference."""
    evaluations: list[Evaluation]
    seeds: tuple[int, ...]
    wall_s: float
    workload_info: dict[str, Any] = field(default_factory=dict)

    @property
    def deployment(self) -> Deployment:
        return self.best.deployment

    @property
    def ttft_margin(self) -> float | None:
        """TTFT p90 over the TTFT target (below 1: inside it)."""
        if self.slo.ttft is None or self.best.ttft_p90 is None:
            return None
        return self.best.ttft_p90 / self.slo.ttft

    def to_json(self) -> dict[str, Any]:
        """JSON-ready; times in seconds, rates in requests per second."""
        return {"workload": self.workload, "workload_info": self.workload_info, "rate": self.rate,
                "slo": {"ttft": self.slo.ttft, "tpot": self.slo.tpot, "attainment": self.attainment_target},
                "profile": self.profile, "gpus_per_replica": self.gpus_per_replica, "seeds": list(self.seeds),
                "plan": {**self.best.to_json(), "headroom_rate": self.headroom_rate,
                         "ttft_p90_over_target": self.ttft_margin},
                "options": [e.to_json() for e in self.options],
                "evaluations": [e.to_json() for e in self.evaluations], "wall_s": self.wall_s}


def check_configs(configs: Sequence[str], pd_configs: Sequence[str]) -> None:
    for c in configs:
        if c not in SHIPPED_CONFIGS:
            raise ConfigError(f"unknown aggregated config {c!r} (shipped: {', '.join(SHIPPED_CONFIGS)})", "configs")
    for c in pd_configs:
        if c not in PD_SHIPPED_CONFIGS:
            raise ConfigError(f"unknown P/D config {c!r} (shipped: {', '.join(PD_SHIPPED_CONFIGS)})", "pd_configs")
    if not configs and not pd_configs:
        raise ConfigError("nothing to search: give at least one config", "configs")


def plan(workload: PlanWorkload, rate: float | Sequence[float], *, slo_ttft: float | None = None,
         slo_tpot: float | None = None, attainment: float = ATTAINMENT, profile: str = DEFAULT_PROFILE,
         configs: Sequence[str] = CONFIGS, pd_configs: Sequence[str] = PD_CONFIGS,
         reference: Sequence[str] = REFERENCE, max_replicas: int = 16, gpus_per_replica: float = 1.0,
         seeds: Sequence[int] = (0,), num_blocks: int | None = None, headroom: bool = True, early_stop: bool = True,
         progress: Callable[[str, int, int], None] | None = None, on_evaluation: Callable[[Evaluation], None] | None = None) -> Plan:
    """Search the cluster simulator for the cheapest deployment (GPUs = replicas x ``gpus_per_replica``) whose
    every seed's run of ``workload`` at ``rate`` (req/s; a rate curve is planned for its peak) has at least
    ``attainment`` of its requests within ``slo_ttft`` and ``slo_tpot`` (seconds; default: the workload's).

    Searched: each aggregated config in ``configs`` over 1..``max_replicas`` replicas, each P/D config in
    ``pd_configs`` over prefill + decode splits; ``reference`` configs are searched and listed but never chosen.
    Ties on GPUs go to the higher attainment. The plan's headroom is the highest multiple of the rate (up to
    2x) it still meets. ``early_stop`` ends a run once it cannot meet the SLO (its attainment is then an upper
    bound); without it every run goes to its last request (for plotting attainment). Raises :class:`PlanUnreachable` (with the closest deployment) when nothing meets the SLO,
    ``ConfigError`` on bad arguments."""
    t0 = time.perf_counter()
    target = _peak(rate)
    check_configs(configs, pd_configs)
    if not 0 < attainment <= 1:
        raise ConfigError(f"must be in (0, 1], got {attainment}", "attainment")
    if max_replicas < 1 or (not configs and max_replicas < 2):
        raise ConfigError(f"must be >= 1 (>= 2 for P/D), got {max_replicas}", "max_replicas")
    if not seeds:
        raise ConfigError("give at least one seed", "seeds")
    slo = SLO(ttft=slo_ttft if slo_ttft is not None else workload.slo_ttft,
              tpot=slo_tpot if slo_tpot is not None else workload.slo_tpot)
    if slo.ttft is None and slo.tpot is None:
        raise ConfigError("the workload names no SLO: give a TTFT or TPOT target", "slo_ttft")
    sims = Simulations(workload, slo, attainment, profile=profile, seeds=seeds,
                       num_blocks=num_blocks if num_blocks is not None else workload.num_blocks,
                       gpus_per_replica=gpus_per_replica, early_stop=early_stop, progress=progress, on_evaluation=on_evaluation)
    chosen = [c for c in (*configs, *pd_configs) if c not in reference]

    def cheapest() -> int:  # the fewest replicas a candidate config met the SLO with so far
        return min((d.replicas for (d, r), e in sims.done.items()
                    if r == target and e.meets and d.config in chosen), default=max_replicas)

    def meets(config: str, prefill: int, decode: int) -> bool:
        return sims.meets(Deployment(config, prefill, decode), target)

    for config in sorted(configs, key=lambda c: c in reference):  # candidates first: their minimum bounds the rest
        smallest(partial(meets, config, 0), 1, max_replicas, start=_hint(sims, target))
    for config in pd_configs:
        pd_frontier(partial(meets, config), max_replicas, cap=cheapest, start=max(1, _hint(sims, target) // 2))
    at_target = [e for (_, r), e in sims.done.items() if r == target]
    options = per_form_best(at_target)
    winners = [e for e in options if e.deployment.config in chosen]
    if not winners:
        closest = max(at_target, key=lambda e: (e.attainment, -e.gpus), default=None)
        what = f"; the closest was {closest.deployment.label} at {closest.attainment:.1%}" if closest else ""
        raise PlanUnreachable(f"no deployment of up to {max_replicas} replicas meets the SLO ({_slo_text(slo)} for "
                              f"{attainment:.0%} of requests) at {target:g} req/s{what}", closest)
    best = winners[0]
    head = _headroom(sims, best.deployment, target) if headroom else None
    return Plan(workload.name, target, slo, attainment, profile, gpus_per_replica, best, head, options,
                sorted(at_target, key=rank_key), tuple(seeds), round(time.perf_counter() - t0, 2),
                dict(workload.info))


def _peak(rate: float | Sequence[float]) -> float:
    rates = [float(rate)] if isinstance(rate, int | float) else [float(r) for r in rate]
    if not rates or any(not math.isfinite(r) or r <= 0 for r in rates):
        raise ConfigError(f"rates must be positive numbers, got {rate!r}", "rate")
    return max(rates)


def _hint(sims: Simulations, rate: float) -> int:
    """Where to start a form's search: the fewest replicas any form has met the SLO with so far (1 at first)."""
    passing = [d.replicas for (d, r), e in sims.done.items() if r == rate and e.meets]
    return min(passing, default=1)


def _headroom(sims: Simulations, dep: Deployment, rate: float) -> float:
    """The highest multiple of ``rate`` (of :data:`HEADROOM_FACTORS`, then a geometric midpoint) ``dep`` meets."""
    ok, bad = 1.0, None
    for f in HEADROOM_FACTORS:
        if not sims.meets(dep, round(rate * f, 6)):
            bad = f
            break
        ok = f
    if bad is not None:
        mid = round(math.sqrt(ok * bad), 3)
        if sims.meets(dep, round(rate * mid, 6)):
            ok = mid
    return round(rate * ok, 6)


def _slo_text(slo: SLO) -> str:
    parts = []
    if slo.ttft is not None:
        parts.append(f"TTFT <= {slo.ttft:g} s")
    if slo.tpot is not None:
        parts.append(f"TPOT <= {slo.tpot * 1000:g} ms")
    return ", ".join(parts)
