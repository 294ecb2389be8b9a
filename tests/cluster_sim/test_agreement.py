"""The cluster simulator agrees with the live HTTP stack (engines + router + load generator) on a small workload.

Same requests, same arrival times, same engine shape, side by side. Only what does not depend on the machine's load
is asserted: every request answered, hit rates within 15%, and the same ordering of the two
configs by hit rate. The TTFT agreement is wall-clock and is measured by ``benchmarks/sim_vs_live.py`` (spread in
``benchmarks/RESULTS.md``).
"""

from __future__ import annotations

import importlib.util
import random
import sys
from pathlib import Path

import pytest

from llmd_kserve.bench.workloads import make_workload

pytestmark = pytest.mark.slow


def _bench():
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "sim_vs_live.py"
    spec = importlib.util.spec_from_file_location("sim_vs_live", path)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("sim_vs_live", mod)
    spec.loader.exec_module(mod)
    return mod


def test_sim_agrees_with_live_stack() -> None:
    bench = _bench()
    reqs = make_workload(bench.SPEC, bench.ARRIVAL, random.Random(0), 100)
    live, sim = bench.live_runs(reqs), bench.sim_runs(reqs)
    for config in bench.CONFIGS:
        lv, sm = live[config], sim[config]
        assert lv["n"] == sm["n"] == len(reqs) and lv["errors"] == sm["errors"] == 0, config
        assert abs(sm["cache_hit_rate"] - lv["cache_hit_rate"]) <= 0.15 * lv["cache_hit_rate"], config
    assert live["default"]["cache_hit_rate"] > live["round-robin"]["cache_hit_rate"]
    assert sim["default"]["cache_hit_rate"] > sim["round-robin"]["cache_hit_rate"]
