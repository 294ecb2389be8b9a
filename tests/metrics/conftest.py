"""Golden vLLM 0.26 /metrics pages shared by the metrics tests."""

from __future__ import annotations

from pathlib import Path

import pytest

WIRE = Path(__file__).resolve().parents[3] / "shared" / "vllm-wire"


@pytest.fixture(scope="session")
def metrics_text() -> str:
    path = WIRE / "vllm_metrics.txt"
    if not path.exists():
        pytest.skip(f"golden metrics not found at {path}")
    return path.read_text()


@pytest.fixture(scope="session")
def metrics_after_load_text() -> str:
    path = WIRE / "vllm_metrics_after_load.txt"
    if not path.exists():
        pytest.skip(f"golden metrics not found at {path}")
    return path.read_text()
