"""Golden vLLM 0.26 wire samples vendored under ``tests/golden/`` (copied once from ``shared/vllm-wire``)."""

from __future__ import annotations

import base64
import gzip
import json
from pathlib import Path
from typing import Any

GOLDEN = Path(__file__).parent / "golden"


def golden_json(name: str) -> Any:
    return json.loads((GOLDEN / name).read_text())


def golden_text(name: str) -> str:
    return (GOLDEN / name).read_text()


def kv_event_frames() -> list[tuple[bytes, ...]]:
    """The first 400 ZMQ multipart messages of a real vLLM 0.26 run: ``(topic, seq, msgpack payload)``."""
    data = json.loads(gzip.decompress((GOLDEN / "kv_events_frames.json.gz").read_bytes()))
    return [tuple(base64.b64decode(part) for part in frame) for frame in data["frames_b64"]]
