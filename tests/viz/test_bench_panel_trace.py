"""The notebooks' bench panel replays a trace: its own times (one run per policy), fitted to the context, with
a progress bar that moves as simulated requests finish."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("ipywidgets")

from llmd_kserve.bench.workloads import SharedPrefixSpec  # noqa: E402
from llmd_kserve.viz.widgets import BenchPanel  # noqa: E402

TRACE = Path(__file__).resolve().parents[2] / "benchmarks" / "traces" / "mooncake_synthetic_500.jsonl"


async def test_a_trace_replays_at_its_own_times_per_policy():
    bench = BenchPanel(trace=TRACE, max_requests=30, policies=("round-robin", "default"), sim=True, sim_engines=2)
    assert bench.num_requests.value == 30 and bench.rates.value == "" and bench.workload.value == "trace"
    report = await bench.run()
    assert report is not None, bench.status.text
    assert [r["arrival"] for r in report["runs"]] == ["trace", "trace"]
    assert all(r["summary"]["n"] == 30 and r["summary"]["errors"] == 0 for r in report["runs"])
    assert bench.progress.value == bench.progress.max == 60
    fit = report["workload"]["trace_fit"]
    assert fit["max_model_len"] == 16384 and fit["clipped"] > 0
    assert f"{fit['clipped']} of 30 trace requests clipped to the context" in bench.status.text
    poisson = await bench.run(policies=["default"], rates=[5.0], num_requests=100)  # more than the trace holds
    assert poisson is not None and poisson["runs"][0]["arrival"] == "poisson@5/s"
    assert poisson["runs"][0]["summary"]["n"] == 30 and bench.progress.value == bench.progress.max == 30


async def test_a_synthetic_workload_still_needs_a_rate():
    bench = BenchPanel(workload=SharedPrefixSpec(num_groups=1, prompts_per_group=2), rates=(), sim=True)
    assert await bench.run() is None and bench.status.text.startswith("rates:")
