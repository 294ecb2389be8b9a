"""bench.frontier: max rate within the SLO, sweeps that stop past the knee, spreads over repeats."""

from __future__ import annotations

import pytest

from llmd_kserve.bench.frontier import Spread, max_rate_within_slo, ratio_range, spread, sweep


def test_max_rate_is_the_last_rate_before_the_first_miss() -> None:
    assert max_rate_within_slo({10: 1.0, 20: 0.95, 30: 0.5, 40: 0.95}) == 20  # a later pass does not count
    assert max_rate_within_slo({10: 0.89, 20: 1.0}) == 0.0
    assert max_rate_within_slo({30: 0.9, 10: 1.0, 20: None}) == 10  # None (no request succeeded) is a miss
    assert max_rate_within_slo({10: 0.8, 20: 0.8}, threshold=0.75) == 20
    assert max_rate_within_slo({}) == 0.0


def _capacity(knee: float):  # noqa: ANN202 - a fake engine pool: attainment falls past the knee
    calls: list[float] = []

    def run(rate: float) -> dict[str, float]:
        calls.append(rate)
        return {"attain": 1.0 if rate <= knee else 0.4}
    return run, calls


def test_sweep_runs_ascending_and_stops_after_the_first_miss() -> None:
    run, calls = _capacity(25)
    seen: list[float] = []
    out = sweep([40, 10, 30, 20, 50], run, on_point=lambda r, p: seen.append(r))
    assert calls == [10, 20, 30] == seen
    assert max_rate_within_slo({r: p["attain"] for r, p in out.items()}) == 20


def test_sweep_always_runs_the_matched_rate_and_tolerates_more_misses_when_asked() -> None:
    run, calls = _capacity(15)
    sweep([10, 20, 30, 40], run, always=[35])
    assert calls == [10, 20, 35]
    run, calls = _capacity(15)
    sweep([10, 20, 30, 40], run, stop_after=2)
    assert calls == [10, 20, 30]
    run, calls = _capacity(100)
    sweep([10, 20], run, always=[5])
    assert calls == [5, 10, 20]
    with pytest.raises(ValueError, match="stop_after"):
        sweep([10], run, stop_after=0)


def test_spread_and_ratio() -> None:
    s = spread([2.0, None, 4.0])
    assert s == Spread(3.0, 2.0, 4.0, 2)
    assert s.fmt() == "3 (2-4)"
    assert Spread(0.1234, 0.1234, 0.1234, 1).fmt(1e3, 1) == "123.4"
    assert spread([None]) is None
    mean, worst, best = ratio_range(Spread(30, 20, 40, 2), Spread(10, 10, 10, 2))
    assert (mean, worst, best) == (3.0, 2.0, 4.0)
    assert ratio_range(Spread(1, 1, 1, 1), Spread(0, 0, 0, 1))[0] == float("inf")
