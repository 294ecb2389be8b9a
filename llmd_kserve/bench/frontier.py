"""Goodput frontier: rate sweeps that stop past the knee, the max rate within the SLO, and spreads over repeats.

A rate sweep runs one point per offered rate in ascending order; a point is judged by its SLO attainment (the share
of requests meeting the TTFT and TPOT objectives). The max rate within the SLO is the highest swept rate up to which
every point attains the threshold (0 when the lowest does not). Once ``stop_after`` consecutive rates fail, the rates
above cannot raise it, so the sweep skips them, except the ones listed in ``always`` (the matched-load point that
every policy is compared at). ``Spread`` reports repeats (seeds) as mean and min-max.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

ATTAIN = 0.9
"""Default attainment a rate must reach to count as within the SLO."""

Point = Mapping[str, Any]
"""One point's measurements; it must hold ``attain`` (SLO attainment, 0..1, or None for no successful request)."""


def max_rate_within_slo(attain: Mapping[float, float | None], threshold: float = ATTAIN) -> float:
    """The highest rate up to which every swept rate attains ``threshold`` (0.0 if the lowest does not)."""
    best = 0.0
    for rate in sorted(attain):
        if (attain[rate] or 0.0) < threshold:
            break
        best = rate
    return best


def sweep(rates: Iterable[float], run_point: Callable[[float], Point], *, always: Iterable[float] = (),
          stop_after: int = 1, threshold: float = ATTAIN,
          on_point: Callable[[float, Point], None] | None = None) -> dict[float, Point]:
    """Run ``run_point(rate)`` for each rate ascending until ``stop_after`` consecutive rates miss ``threshold``;
    the rates in ``always`` run regardless. Returns {rate: point} for the rates that ran."""
    if stop_after < 1:
        raise ValueError(f"stop_after must be >= 1, got {stop_after}")
    must = set(always)
    out: dict[float, Point] = {}
    fails = 0
    for rate in sorted(set(rates) | must):
        if fails >= stop_after and rate not in must:
            continue
        point = run_point(rate)
        out[rate] = point
        if on_point is not None:
            on_point(rate, point)
        fails = fails + 1 if (point.get("attain") or 0.0) < threshold else 0
    return out


@dataclass(frozen=True, slots=True)
class Spread:
    """Mean and range of one metric over repeats."""

    mean: float
    min: float
    max: float
    n: int

    def fmt(self, scale: float = 1.0, digits: int = 0) -> str:
        """``mean (min-max)``, or just the value for a single repeat."""
        m = f"{self.mean * scale:.{digits}f}"
        return m if self.n == 1 else f"{m} ({self.min * scale:.{digits}f}-{self.max * scale:.{digits}f})"


def spread(values: Iterable[float | None]) -> Spread | None:
    """The spread of the values that are not None (None when there are none)."""
    xs = [float(v) for v in values if v is not None]
    if not xs:
        return None
    return Spread(statistics.fmean(xs), min(xs), max(xs), len(xs))


def ratio_range(num: Spread, den: Spread) -> tuple[float, float, float]:
    """(mean ratio, worst case, best case) of ``num / den``: min/max and max/min bound the ratio over repeats."""
    def div(a: float, b: float) -> float:
        return a / b if b else float("inf")
    return div(num.mean, den.mean), div(num.min, den.max), div(num.max, den.min)
