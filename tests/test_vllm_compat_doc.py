"""Every test the vLLM 0.26 / 0.32 table of ``docs/vllm.md`` names exists (``file::name``, or ``::name`` in the file
named before it in the same row)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_compatibility_table_names_existing_tests():
    table = (ROOT / "docs" / "vllm.md").read_text().split("## vLLM 0.26 and 0.32", 1)[1]
    rows = [ln for ln in table.splitlines() if ln.startswith("| ") and "::" in ln]
    assert len(rows) >= 10
    for row in rows:
        last = None
        for cell in re.findall(r"`([^`]*::\w+)`", row):
            path, _, name = cell.partition("::")
            last = path or last
            assert last is not None, row
            assert re.search(rf"^(async )?def {name}\(", (ROOT / last).read_text(), re.M), f"{last}::{name}"
