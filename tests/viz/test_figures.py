"""Records and figures on real data: bench JSON from the cluster simulator (a sweep of two policies)."""

from __future__ import annotations

import math

import pytest

from llmd_kserve.bench.report import build_report, write_json
from llmd_kserve.bench.stats import SLO
from llmd_kserve.bench.workloads import SharedPrefixSpec, sweep
from llmd_kserve.cluster_sim import run_bench
from llmd_kserve.viz import figures, load_bench
from llmd_kserve.viz.data import by_policy, pareto_front
from llmd_kserve.viz.sources.bench import latencies_by_run

SPEC = SharedPrefixSpec(num_groups=6, prompts_per_group=20, system_prompt_len=1500, question_len=64, output_len=16)
RATES = (10.0, 40.0)


@pytest.fixture(scope="module")
def report():
    slo = SLO(ttft=0.2, tpot=0.05)
    runs = [r for policy in ("round-robin", "default")
            for r in run_bench(workload=SPEC, arrivals=sweep(RATES), num_requests=120, engines=2, config=policy,
                               slo=slo, policy_label=policy)]
    return build_report({"kind": "shared-prefix"}, runs)


def test_run_points_carry_the_summary(report, tmp_path):
    write_json(report, tmp_path / "r.json")
    points = load_bench(tmp_path / "r.json")
    assert [(p.policy, p.rate) for p in points] == [(pol, r) for pol in ("round-robin", "default") for r in RATES]
    for p, run in zip(points, report["runs"], strict=True):
        s = run["summary"]
        assert (p.n, p.ttft.p90, p.tpot.p50, p.goodput_rps, p.hit_rate) == (
            s["n"], s["ttft_p90"], s["tpot_p50"], s["goodput_rps"], s["cache_hit_rate"])
        assert p.slo_ttft == 0.2 and p.scale == "sim"
    assert load_bench(report, report)[len(points):] == points  # several reports side by side
    with pytest.raises(ValueError, match="no 'runs'"):
        load_bench({"workload": {}})
    with pytest.raises(ValueError, match="cannot read"):
        load_bench(tmp_path / "missing.json")


def test_sweep_figures_draw_the_numbers(report):
    points = load_bench(report)
    groups = by_policy(points)
    fig = figures.latency_vs_rate(points, "ttft")
    assert len(fig.data) == 2 * 3  # two policies x p50/p90/p99
    p90 = next(t for t in fig.data if t.name == "default · sim p90")
    assert list(p90.x) == list(RATES)
    assert list(p90.y) == pytest.approx([p.ttft.p90 * 1000 for p in groups["default · sim"]])
    good = figures.goodput_vs_rate(points)
    assert "TTFT ≤ 200 ms" in good.layout.title.text and "TPOT ≤ 50 ms" in good.layout.title.text
    rr = next(t for t in good.data if t.name == "round-robin · sim")
    assert list(rr.y) == pytest.approx([p.goodput_rps for p in groups["round-robin · sim"]])
    thr = figures.throughput_vs_rate(points)
    assert thr.data[0].name == "offered" and list(thr.data[0].y) == list(RATES)
    with pytest.raises(ValueError, match="metric"):
        figures.latency_vs_rate(points, "nope")


def test_pareto_front_is_not_dominated(report):
    points = load_bench(report)
    front = pareto_front(points)
    assert front
    for p in front:
        assert not any(o.throughput_rps > p.throughput_rps and o.ttft.p90 < p.ttft.p90 for o in points)
    fig = figures.pareto(points)
    assert fig.data[-1].name == "Pareto front" and len(fig.data[-1].x) == len(front)


def test_single_rate_runs_draw_bars_and_cdfs(report):
    one_rate = {"runs": [r for r in report["runs"] if r["arrival"].endswith("@40/s")]}
    points = load_bench(one_rate)
    fig = figures.latency_vs_rate(points, "tpot")
    assert fig.data[0].type == "bar" and list(fig.data[0].x) == ["round-robin · sim", "default · sim"]
    cdf = figures.latency_cdf(latencies_by_run(one_rate), "TTFT")
    assert len(cdf.data) == 2 and cdf.data[0].y[-1] == 1.0
    assert all(math.isfinite(x) for x in cdf.data[0].x)
