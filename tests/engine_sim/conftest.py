"""Fixtures for the simulated engine's tests: golden vLLM 0.26 wire samples and in-process engines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmd_kserve.engine_sim.profile import load_profile

GOLDEN = Path(__file__).parent / "golden"


def golden_json(name: str):
    return json.loads((GOLDEN / name).read_text())


def golden_text(name: str) -> str:
    return (GOLDEN / name).read_text()


@pytest.fixture(scope="session")
def profile():
    return load_profile()
