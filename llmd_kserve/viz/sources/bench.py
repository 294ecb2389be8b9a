"""Bench JSON documents (one run, a sweep, several policies, several files side by side) as ``RunPoint`` records."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from llmd_kserve.viz.data import RunPoint, run_points

Report = Mapping[str, Any]


def _read(src: str | Path | Report) -> Report:
    if isinstance(src, Mapping):
        return src
    try:
        return json.loads(Path(src).read_text())
    except OSError as exc:
        raise ValueError(f"cannot read bench report {src}: {exc.strerror or exc}") from exc
    except json.JSONDecodeError as exc:
        raise ValueError(f"{src} is not JSON: {exc.msg} at line {exc.lineno}") from exc


def load_bench(*sources: str | Path | Report | Sequence[str | Path | Report]) -> tuple[RunPoint, ...]:
    """Every run of every given bench report (paths or already loaded documents), in order."""
    flat: list[str | Path | Report] = []
    for s in sources:
        if isinstance(s, (str, Path, Mapping)):
            flat.append(s)
        else:
            flat.extend(s)
    return tuple(p for s in flat for p in run_points(_read(s)))


def latencies_by_run(report: Report, metric: str = "ttft") -> dict[str, list[float]]:
    """Per-request ``metric`` values (seconds) of each run, keyed by run label (for ``figures.latency_cdf``)."""
    out: dict[str, list[float]] = {}
    for run, point in zip(report.get("runs", []), run_points(report), strict=True):
        label = point.label + (f" @{point.rate:g}/s" if point.rate is not None else "")
        out[label] = [r[metric] for r in run.get("requests", []) if r.get(metric) is not None]
    return out
