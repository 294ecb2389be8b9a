"""The highest time compression a router config sustains within an SLO, from replays of one trace at several
time scales (``time_scale`` multiplies a trace's gaps: 0.25 replays it four times faster, a compression of 4x).

A run *sustains* its load when at least ``attainment`` of its requests met the SLO (and it had requests). The
highest sustained compression is read from the slowest scale up: the fastest scale before the first one that fails,
so a lucky fast run past a failure does not count. :func:`next_scale` proposes where to run next to narrow the knee
(the geometric midpoint between the fastest sustained and the slowest failing scale).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

DEFAULT_ATTAINMENT = 0.9
"""A run sustains its load when this share of its requests met the SLO."""


def parse_scales(text: str) -> list[float]:
    """``"1,0.5,0.25"`` as time scales, slowest first; each must be > 0."""
    try:
        scales = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"time scales must be numbers separated by commas, got {text!r}") from None
    if not scales or any(not math.isfinite(s) or s <= 0 for s in scales):
        raise ValueError(f"time scales must be positive numbers, got {text!r}")
    return sorted(set(scales), reverse=True)


def sustains(summary: Mapping[str, Any], attainment: float = DEFAULT_ATTAINMENT) -> bool:
    """Whether a run (its bench summary) met the SLO for at least ``attainment`` of its requests."""
    share = summary.get("slo_attainment")
    return bool(summary.get("n")) and share is not None and share >= attainment


@dataclass(frozen=True, slots=True)
class Knee:
    """Where a config stops sustaining its load: ``best`` is the fastest sustained time scale (None: not even the
    slowest tried), ``failed`` the slowest one that failed after it (None: every scale tried sustained)."""

    best: float | None
    failed: float | None

    @property
    def compression(self) -> float | None:
        """The highest sustained compression (1 / ``best``)."""
        return None if self.best is None else 1.0 / self.best

    def text(self) -> str:
        if self.best is None:
            return f"none (fails at time scale {self.failed:g})"
        bound = "" if self.failed is None else f", fails at {1.0 / self.failed:.3g}x"
        more = " or more" if self.failed is None else ""
        return f"{self.compression:.3g}x{more} (time scale {self.best:g}{bound})"


def knee(results: Mapping[float, bool]) -> Knee:
    """The knee of ``{time_scale: sustained}``: scales walked from the slowest to the fastest, up to the first
    failure."""
    best = None
    for scale in sorted(results, reverse=True):
        if not results[scale]:
            return Knee(best, scale)
        best = scale
    return Knee(best, None)


def next_scale(results: Mapping[float, bool], precision: float = 1.1) -> float | None:
    """The time scale to try next to narrow the knee: the geometric midpoint between the fastest sustained scale
    and the slowest failing one; None when there is no such pair, or they are within ``precision`` (a ratio)."""
    k = knee(results)
    if k.best is None or k.failed is None or k.best / k.failed <= precision:
        return None
    return round(math.sqrt(k.best * k.failed), 4)
