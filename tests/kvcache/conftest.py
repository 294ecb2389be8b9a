"""Golden vLLM 0.26 KV-event frames shared by the kvcache tests."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

FRAMES = Path(__file__).resolve().parents[3] / "shared" / "vllm-wire" / "kv_events_frames.json"


def load_frames() -> list[tuple[bytes, bytes, bytes]]:
    data = json.loads(FRAMES.read_text())
    return [tuple(base64.b64decode(part) for part in frame) for frame in data["frames_b64"]]


@pytest.fixture(scope="session")
def golden_frames() -> list[tuple[bytes, bytes, bytes]]:
    if not FRAMES.exists():
        pytest.skip(f"golden frames not found at {FRAMES}")
    return load_frames()
