"""inference-perf (a third-party load generator) drives the router of a local stack, and its Benchmark Reports load.

inference-perf needs Python >= 3.12 and this project's environment may be 3.11: the test runs the executable named
by ``INFERENCE_PERF`` (or ``inference-perf`` on PATH), from its own environment, and skips without one.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXE = os.environ.get("INFERENCE_PERF") or shutil.which("inference-perf")
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not EXE, reason="no inference-perf executable (needs Python >= 3.12; set "
                                                 "INFERENCE_PERF to the one in its own environment)")]
pytest.importorskip("llmd_kserve.engine_sim.server", reason="simulated engine server not available")
sys.path.insert(0, str(ROOT / "benchmarks"))
import inference_perf_client  # noqa: E402

from llmd_kserve.viz.sources.benchmark_report import load_benchmark_reports  # noqa: E402


def test_inference_perf_drives_the_router_and_its_report_loads(tmp_path):
    files = inference_perf_client.run(str(EXE), tmp_path, engines=2, rate=4.0, duration=4.0)
    names = {f.name for f in files}
    assert "stage_0_lifecycle_metrics.json" in names and "inference-perf.partial.stage_0.yaml" in names
    (point,) = load_benchmark_reports(tmp_path / "reports" / "inference-perf.partial.stage_0.yaml")
    assert point.n >= 8 and point.errors == 0  # ~16 requests at 4/s for 4 s, every one answered by the router
    assert 0 < point.ttft.p50 < point.e2e.p50 < 10 and point.throughput_rps > 0
