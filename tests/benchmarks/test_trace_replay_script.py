"""benchmarks/trace_replay.py: the traces x configs table, simulated, on the shipped excerpts."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

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


SYNTHETIC = str(Path(trace_replay.HERE) / "traces" / "mooncake_synthetic_500.jsonl")


def test_a_sweep_narrows_the_knee_and_stops_a_config_at_its_first_failure(tmp_path, capsys):
    out = tmp_path / "sweep.json"
    # 60 requests on 2 engines: sustained when stretched 4x, far past saturation at 50x and 100x
    assert trace_replay.main(["--sim", "--trace", SYNTHETIC, "--configs", "round-robin", "--max-requests", "60",
                              "--engines", "2", "--time-scales", "4,0.02,0.01", "--refine", "2", "--no-progress",
                              "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    scales = [float(r["time scale"]) for r in doc["table"]]
    assert scales[:2] == [4.0, 0.02] and 0.01 not in scales  # 0.01 cannot move the knee once 0.02 failed
    assert len(scales) == 4 and all(0.02 < s < 4 for s in scales[2:])  # two refinements inside the bracket
    in_slo = {float(r["time scale"]): float(r["in SLO"].rstrip("%")) for r in doc["table"]}
    (row,) = doc["compression"]
    best = float(row["time scale"])
    assert in_slo[best] >= 90 and all(in_slo[s] >= 90 for s in in_slo if s > best)
    assert row["config"] == "round-robin" and row["max compression"].startswith(f"{1 / best:.3g}x")
    assert "Highest sustained compression" in capsys.readouterr().out


def test_configs_the_replay_cannot_run_are_refused_in_one_line(capsys):
    for argv, message in [(["--sim", "--configs", "pd-never"], "--prefill N --decode M"),
                          (["--sim", "--configs", "vllm-router"], "only with --live"),
                          (["--sim", "--time-scales", "1,0"], "time scales must be positive"),
                          (["--sim", "--prefill", "2"], "--prefill and --decode go together"),
                          (["--live", "0"], "at least one engine")]:
        try:
            trace_replay.main(argv)
        except SystemExit as exc:
            assert exc.code == 2
        else:
            raise AssertionError(f"{argv} was accepted")
        assert message in capsys.readouterr().err


def test_pd_configs_run_on_a_pd_cluster(tmp_path):
    out = tmp_path / "pd.json"
    assert trace_replay.main(["--sim", "--trace", SYNTHETIC, "--configs", "pd-always", "--prefill", "1",
                              "--decode", "1", "--max-requests", "20", "--no-progress", "--json", str(out)]) == 0
    (report,) = json.loads(out.read_text())["reports"]
    assert report["workload"]["engines"] == 2
    (row,) = json.loads(out.read_text())["table"]
    assert row["n"] == "20" and row["errors"] == "0"


@pytest.mark.slow
@pytest.mark.parametrize("config", ["precise-prefix", "vllm-router"])
def test_live_replay_on_a_fresh_local_stack(config, tmp_path):
    """A fresh stack of two simulated engines per run; vLLM's router (when installed) in front of them instead."""
    if config == "vllm-router" and not shutil.which("vllm-router"):
        pytest.skip("vllm-router is not installed (the bench extra)")
    out = tmp_path / "live.json"
    assert trace_replay.main(["--live", "2", "--trace", SYNTHETIC, "--configs", config, "--max-requests", "12",
                              "--time-scale", "0.2", "--no-progress", "--json", str(out)]) == 0
    (row,) = json.loads(out.read_text())["table"]
    assert (row["mode"], row["n"], row["errors"]) == ("live", "12", "0")
    assert row["hit rate"] != "–"  # the engines' prefix-cache counters, read before and after


def test_live_pd_needs_prefill_and_decode_adding_up_to_its_engines(capsys):
    for argv, message in [(["--live", "3", "--prefill", "1", "--decode", "1", "--configs", "pd-always"],
                           "must add up to it"),
                          (["--live", "2", "--configs", "pd-always"], "--prefill N --decode M"),
                          (["--live", "2", "--prefill", "1", "--decode", "1", "--configs", "vllm-router"],
                           "aggregated engines only")]:
        with pytest.raises(SystemExit) as exc:
            trace_replay.main(argv)
        assert exc.value.code == 2
        assert message in capsys.readouterr().err


@pytest.mark.slow
def test_live_pd_replay_on_a_fresh_pd_stack(tmp_path):
    """One prefill and one decode engine: pd-always prefills every prompt remotely, pd-never none."""
    out = tmp_path / "pd.json"
    assert trace_replay.main(["--live", "2", "--prefill", "1", "--decode", "1", "--trace", SYNTHETIC,
                              "--configs", "pd-always,pd-never", "--max-requests", "8", "--time-scale", "0.2",
                              "--no-progress", "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert [(r["config"], r["mode"], r["n"], r["errors"]) for r in doc["table"]] == [
        ("pd-always", "live", "8", "0"), ("pd-never", "live", "8", "0")]
    assert all(r["workload"]["prefill"] == 1 and r["workload"]["decode"] == 1 for r in doc["reports"])
    hit = {r["config"]: float(r["hit rate"].rstrip("%")) for r in doc["table"]}
    assert hit["pd-always"] > hit["pd-never"]  # the decode engine counts KV received from the prefill engine
