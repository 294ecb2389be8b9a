"""Golden vLLM wire samples: 0.26 under ``tests/golden/`` (copied once from ``shared/vllm-wire``), 0.32 under
``tests/golden/vllm-0.32/``."""

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


# --- real vLLM 0.32 samples (tests/golden/vllm-0.32/, see its README) ---------------------------------------------

GOLDEN_032 = GOLDEN / "vllm-0.32"


def golden032_json(name: str) -> Any:
    return json.loads((GOLDEN_032 / name).read_text())


def golden032_text(name: str) -> str:
    return (GOLDEN_032 / name).read_text()


def kv_event_frames_032() -> list[tuple[bytes, ...]]:
    """Every ZMQ message of the 0.32 capture: stores, evictions, a reset (``AllBlocksCleared``) and a store after it."""
    data = json.loads(gzip.decompress((GOLDEN_032 / "kv_events_frames.json.gz").read_bytes()))
    return [tuple(base64.b64decode(part) for part in frame) for frame in data["frames_b64"]]


def tiny_model_tokenizer(folder: Path) -> Path:
    """The 0.32 capture's tokenizer files written into ``folder`` (``tokenizer.json`` is stored gzipped)."""
    src = GOLDEN_032 / "tokenizer"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tokenizer.json").write_bytes(gzip.decompress((src / "tokenizer.json.gz").read_bytes()))
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        (folder / name).write_bytes((src / name).read_bytes())
    return folder
