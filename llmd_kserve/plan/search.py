"""The search for the smallest deployment that meets an SLO, in the cluster simulator.

A *form* is a router config with its engine layout: aggregated replicas (``default``, ``round-robin``…), or prefill
and decode pools under a ``pd-*`` config. Within a form more replicas never hurt (assumed, and how the search saves
runs): for aggregated forms :func:`smallest` gallops up the replica count (1, 2, 4, …) to a passing count and
bisects below it; for P/D forms :func:`pd_frontier` walks the staircase of the monotone (prefill, decode) grid:
the fewest decode replicas for one prefill replica, then, one prefill replica more at a time, as few decode replicas
as still pass, until a split could no longer tie the cheapest deployment found. Every run is memoised, so a
neighbour is never simulated twice.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from math import gcd
from typing import Any


@dataclass(frozen=True, slots=True)
class Deployment:
    """One deployment: a router config over ``prefill`` prefill and ``decode`` decode replicas (``prefill == 0``:
    ``decode`` aggregated replicas)."""

    config: str
    prefill: int
    decode: int

    @property
    def mode(self) -> str:
        return "pd" if self.prefill else "aggregated"

    @property
    def replicas(self) -> int:
        return self.prefill + self.decode

    @property
    def ratio(self) -> str | None:
        """``P:D`` in lowest terms (None when aggregated)."""
        if not self.prefill:
            return None
        g = gcd(self.prefill, self.decode)
        return f"{self.prefill // g}:{self.decode // g}"

    @property
    def shape(self) -> str:
        if self.prefill:
            return f"{self.prefill}P + {self.decode}D"
        return f"{self.decode} replica{'' if self.decode == 1 else 's'}"

    @property
    def label(self) -> str:
        return f"{self.shape} ({self.config})"

    def to_json(self) -> dict[str, Any]:
        return {"config": self.config, "mode": self.mode, "replicas": self.replicas, "prefill": self.prefill,
                "decode": self.decode, "ratio": self.ratio}


@dataclass(frozen=True, slots=True)
class Evaluation:
    """A deployment's simulated runs at one rate (one per seed): the worst seed's attainment decides."""

    deployment: Deployment
    rate: float
    gpus: float
    attainment: float
    """The lowest share of requests meeting the SLO over the seeds run."""
    meets: bool
    ttft_p90: float | None = None
    """The highest TTFT p90 over the seeds run (seconds)."""
    tpot_p90: float | None = None
    goodput_rps: float | None = None
    cache_hit_rate: float | None = None
    seeds: tuple[int, ...] = ()
    """The seeds run: a failing seed stops the others (the deployment cannot meet the SLO any more)."""
    per_seed: tuple[float, ...] = field(default=(), compare=False)
    stopped_early: bool = False
    """The last seed's run stopped once it could no longer meet the SLO: ``attainment`` is an upper bound."""

    def to_json(self) -> dict[str, Any]:
        return {**self.deployment.to_json(), "rate": self.rate, "gpus": self.gpus, "attainment": self.attainment,
                "meets": self.meets, "ttft_p90": self.ttft_p90, "tpot_p90": self.tpot_p90,
                "goodput_rps": self.goodput_rps, "cache_hit_rate": self.cache_hit_rate, "seeds": list(self.seeds),
                "attainment_per_seed": list(self.per_seed), "stopped_early": self.stopped_early}


Test = Callable[[int], bool]


def smallest(test: Test, lo: int, hi: int, start: int | None = None) -> int | None:
    """The smallest ``n`` in ``[lo, hi]`` with ``test(n)`` for a monotone ``test`` (False… then True…), or None.
    Gallops up from ``start`` (doubling) to a passing ``n``, then bisects between the last failure and it; a
    ``start`` above ``lo`` that passes bisects below it."""
    if lo > hi:
        return None
    x = min(max(start or lo, lo), hi)
    failed, passed = lo - 1, None
    while True:
        if test(x):
            passed = x
            break
        failed = x
        if x >= hi:
            return None
        x = min(hi, max(x + 1, 2 * x))
    while passed - failed > 1:
        mid = (failed + passed) // 2
        if test(mid):
            passed = mid
        else:
            failed = mid
    return passed


def pd_frontier(test: Callable[[int, int], bool], max_replicas: int, cap: Callable[[], int],
                start: int | None = None) -> list[tuple[int, int]]:
    """The passing (prefill, decode) splits with the fewest decode replicas for each prefill count tried, for a
    ``test`` monotone in both counts. Prefill counts go up from 1 while a split could still be at most ``cap()``
    replicas (the cheapest passing deployment known so far, read at each step)."""
    out: list[tuple[int, int]] = []
    d: int | None = None
    for p in range(1, max_replicas):
        room = min(cap(), max_replicas) - p
        if room < 1:
            break
        if d is None:  # no passing split yet: the fewest decode replicas for this prefill count
            d = smallest(partial(_with_prefill, test, p), 1, max_replicas - p, start)
            if d is None:
                continue
        else:  # (p, d) passes: one more prefill replica is never worse; fewer decode replicas?
            while d > 1 and test(p, d - 1):
                d -= 1
        out.append((p, d))
    return out


def _with_prefill(test: Callable[[int, int], bool], prefill: int, decode: int) -> bool:
    return test(prefill, decode)


def rank_key(e: Evaluation) -> tuple[float, float, float]:
    """Cheapest first; then the higher attainment, then the lower TTFT p90."""
    return (e.gpus, -e.attainment, e.ttft_p90 if e.ttft_p90 is not None else float("inf"))


def per_form_best(evaluations: Iterable[Evaluation]) -> list[Evaluation]:
    """The best passing deployment of each (config, P:D ratio), ranked: the options table."""
    best: dict[tuple[str, str | None], Evaluation] = {}
    for e in evaluations:
        if not e.meets:
            continue
        key = (e.deployment.config, e.deployment.ratio)
        if key not in best or rank_key(e) < rank_key(best[key]):
            best[key] = e
    return sorted(best.values(), key=rank_key)
