"""The highest sustained time compression: parsing a sweep, the knee, and where to refine it."""

from __future__ import annotations

import pytest

from llmd_kserve.bench.compression import Knee, knee, next_scale, parse_scales, sustains


def test_scales_are_read_slowest_first_without_repeats() -> None:
    assert parse_scales("0.25, 1,0.5,1") == [1.0, 0.5, 0.25]


@pytest.mark.parametrize("text", ["", "1,x", "1,0", "-0.5", "nan"])
def test_bad_scales_are_refused_in_one_line(text: str) -> None:
    with pytest.raises(ValueError, match="time scales"):
        parse_scales(text)


def test_a_run_sustains_when_enough_of_its_requests_met_the_slo() -> None:
    assert sustains({"n": 10, "slo_attainment": 0.9}, 0.9)
    assert not sustains({"n": 10, "slo_attainment": 0.89}, 0.9)
    assert not sustains({"n": 0, "slo_attainment": None}, 0.9)


def test_the_knee_is_the_fastest_scale_before_the_first_failure() -> None:
    # 0.1 sustained, but after 0.25 failed: a lucky run past a failure does not count
    k = knee({1.0: True, 0.5: True, 0.25: False, 0.1: True})
    assert k == Knee(best=0.5, failed=0.25)
    assert k.compression == 2.0
    assert k.text() == "2x (time scale 0.5, fails at 4x)"


def test_every_scale_sustained_or_none() -> None:
    assert knee({1.0: True, 0.5: True}).text() == "2x or more (time scale 0.5)"
    none = knee({1.0: False, 0.5: False})
    assert none == Knee(best=None, failed=1.0) and none.compression is None
    assert none.text() == "none (fails at time scale 1)"


def test_refinement_bisects_geometrically_until_the_bracket_is_narrow() -> None:
    results = {1.0: True, 0.25: False}
    assert next_scale(results) == 0.5
    results[0.5] = True
    assert next_scale(results) == pytest.approx(0.3536, abs=1e-4)
    assert next_scale({0.5: True, 0.47: False}) is None  # within 10%
    assert next_scale({1.0: True, 0.5: True}) is None  # nothing failed: nothing to narrow
    assert next_scale({1.0: False}) is None
