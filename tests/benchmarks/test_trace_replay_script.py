"""benchmarks/trace_replay.py: the traces x configs table, simulated, on the shipped excerpts."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import trace_replay  # noqa: E402


def test_the_table_has_a_row_per_trace_and_config(tmp_path, capsys):
    out = tmp_path / "t.json"
    assert trace_replay.main(["--sim", "--configs", "round-robin,precise-prefix", "--max-requests", "40",
                              "--engines", "4", "--no-progress", "--json", str(out), "--br-dir",
                              str(tmp_path / "br")]) == 0
    table = json.loads(out.read_text())["table"]
    assert [(r["trace"], r["config"]) for r in table] == [
        (t, c) for t in ("mooncake_conversation_500.jsonl", "mooncake_synthetic_500.jsonl")
        for c in ("round-robin", "precise-prefix")]
    for row in table:
        assert row["n"] == "40" and row["errors"] == "0" and int(row["clipped"]) > 0
        hit, bound = float(row["hit rate"].rstrip("%")), float(row["bound"].rstrip("%"))
        assert hit <= bound + 0.5  # the engines cannot reuse more than the trace shares
    conv = {r["config"]: float(r["hit rate"].rstrip("%")) for r in table if r["trace"].startswith("mooncake_conv")}
    assert conv["precise-prefix"] >= conv["round-robin"] > 0  # every request starts with the same block
    assert "| trace | config | mode |" in capsys.readouterr().out
    assert len(list((tmp_path / "br").iterdir())) == 4
