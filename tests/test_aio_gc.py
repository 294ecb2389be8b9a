"""``aio.relax_gc``: the collector runs far less often under a server's allocation pattern, and still collects."""

from __future__ import annotations

import gc

from llmd_kserve.aio import SERVER_GC_THRESHOLDS, relax_gc


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


def _collections_while_making_cycles(n: int) -> int:
    """Young collections while ``n`` two-object reference cycles become garbage (only the collector frees them)."""
    runs = 0

    def count(phase: str, info: dict) -> None:
        nonlocal runs
        if phase == "start":
            runs += 1

    gc.collect()
    gc.callbacks.append(count)
    try:
        for _ in range(n):
            a, b = _Node(), _Node()
            a.other, b.other = b, a
    finally:
        gc.callbacks.remove(count)
    return runs


def test_relax_gc_collects_less_often_but_still_collects() -> None:
    before = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 10)
        default_runs = _collections_while_making_cycles(50_000)
        relax_gc()
        assert gc.get_threshold() == SERVER_GC_THRESHOLDS
        relaxed_runs = _collections_while_making_cycles(50_000)
    finally:
        gc.set_threshold(*before)
    assert relaxed_runs >= 1  # cyclic garbage is still collected without an explicit gc.collect()
    assert relaxed_runs * 10 < default_runs
