"""Fixtures for the simulated engine's tests: the latency profile."""

from __future__ import annotations

import pytest

from llmd_kserve.latency import load_profile


@pytest.fixture(scope="session")
def profile():
    return load_profile()
