"""Mooncake JSONL traces loaded as a ``TraceSpec`` (bad lines are ConfigErrors naming ``file:line``)."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import ValidationError

from llmd_kserve.bench.workloads.specs import TraceEntry, TraceSpec
from llmd_kserve.errors import ConfigError, config_error_from


def load_trace(path: str | Path, *, block_tokens: int = 512, speedup: float = 1.0) -> TraceSpec:
    """Parse a Mooncake JSONL trace (``timestamp`` ms, ``input_length``, ``output_length``, ``hash_ids``)."""
    p = Path(path)
    try:
        lines = p.read_text().splitlines()
    except OSError as exc:
        raise ConfigError(f"cannot read trace: {exc}", str(p)) from exc
    entries = []
    for no, line in enumerate(lines, 1):
        if line.strip():
            try:
                entries.append(TraceEntry.model_validate(json.loads(line)))
            except ValidationError as exc:
                raise config_error_from(exc, f"{p}:{no}:", "bad trace line") from exc
            except (ValueError, TypeError) as exc:
                raise ConfigError(f"bad trace line: {exc}", f"{p}:{no}") from exc
    return TraceSpec(entries=tuple(entries), block_tokens=block_tokens, speedup=speedup)
