"""Fixtures shared by every test package: the scheduler helpers' KV index and the golden vLLM wire samples."""

from __future__ import annotations

import pytest

from tests.scheduling.sched_fixtures import index  # noqa: F401  (fixture)
from tests.wire import golden_text, kv_event_frames


@pytest.fixture(scope="session")
def golden_frames() -> list[tuple[bytes, ...]]:
    return kv_event_frames()


@pytest.fixture(scope="session")
def metrics_text() -> str:
    return golden_text("vllm_metrics.txt")


@pytest.fixture(scope="session")
def metrics_after_load_text() -> str:
    return golden_text("vllm_metrics_after_load.txt")
