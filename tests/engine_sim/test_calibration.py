"""Every measured calibration scenario, replayed through the engine core on a virtual clock, lands within 20%."""

from __future__ import annotations

from llmd_kserve.engine_sim.calibrate import OUTLIERS, format_table, replay


def test_calibration_within_20_percent(profile):
    points = replay(profile)
    print("\n" + format_table(points))  # pytest -s shows the per-point error table
    scenarios = {p.scenario.split()[0] for p in points}
    assert scenarios == {"prefill", "prefix_hit", "decode", "mixed", "decode_ctx", "prefill_batch"}
    bad = [p for p in points if p.checked and abs(p.error) > 0.20]
    assert not bad, "\n".join(f"{p.scenario} {p.metric}: {p.error:+.1%}" for p in bad)
    assert {p.scenario for p in points if not p.checked and p.metric == "ttft"} == OUTLIERS
