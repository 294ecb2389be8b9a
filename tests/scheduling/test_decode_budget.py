"""``decode-budget-filter``: endpoints whose decode batch would step slower than the budget are dropped."""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

import yaml
from sched_fixtures import endpoint, make_ctx, prompt, request
from test_scheduler import one_profile

import llmd_kserve
from llmd_kserve.bench.scenarios import SCENARIOS, _poisson
from llmd_kserve.bench.workloads import SharedPrefixSpec
from llmd_kserve.cluster_sim import SimOptions, simulate
from llmd_kserve.config.build import build_scheduler
from llmd_kserve.config.loader import parse_config
from llmd_kserve.latency import load_profile


def budget_sched(max_step: float = 0.04):
    cfg = one_profile(("decode-budget-filter", {"maxStepS": max_step}, None), ("round-robin-picker", None, None))
    return build_scheduler(parse_config(cfg), make_ctx())


def test_a_busy_decode_batch_is_dropped_and_the_step_follows_the_profile() -> None:
    sched = budget_sched()
    eps = [endpoint(0, running=400), endpoint(1, running=10), endpoint(2, running=20)]
    res = sched.schedule(request("r", prompt(1, 3000)), eps)
    assert set(res.totals) == {eps[1].id, eps[2].id}
    h100 = load_profile("h100-llama8b")
    assert h100.step_time(0, 0, 401, 401 * 3000) > 0.04 > h100.step_time(0, 0, 21, 21 * 3000)


def test_when_every_endpoint_is_over_budget_all_are_kept() -> None:
    eps = [endpoint(0, running=400), endpoint(1, running=500)]
    assert set(budget_sched().schedule(request("r", prompt(2, 3000)), eps).totals) == {eps[0].id, eps[1].id}


def test_the_routers_own_in_flight_requests_count_before_the_next_scrape() -> None:
    sched = budget_sched(0.01)  # ~6 ms idle, ~15 ms with 60 requests of 3,000 tokens
    eps = [endpoint(0), endpoint(1)]
    targets = [sched.schedule(request(str(i), prompt(i, 3000)), eps[:1]).target for i in range(60)]
    assert set(targets) == {eps[0].id}  # 60 requests in flight on endpoint 0, none scraped yet
    res = sched.schedule(request("next", prompt(99, 3000)), eps)
    assert set(res.totals) == {eps[1].id}


def _default_without_budget(tmp_path: Path) -> Path:
    cfg = yaml.safe_load((Path(llmd_kserve.__file__).parent / "config" / "shipped" / "default.yaml").read_text())
    cfg["plugins"] = [p for p in cfg["plugins"] if p["type"] != "decode-budget-filter"]
    for prof in cfg["schedulingProfiles"]:
        prof["plugins"] = [p for p in prof["plugins"] if p["pluginRef"] != "decode-budget-filter"]
    out = tmp_path / "no-budget.yaml"
    out.write_text(yaml.safe_dump(cfg))
    return out


def test_default_caps_the_decode_batch_of_one_hot_prefixs_replica(tmp_path: Path) -> None:
    """One shared prefix for every request: a TTFT model alone keeps choosing the replica that caches it (its TTFT
    stays lowest) until its decode batch breaks TPOT; the decode budget spills the excess to other replicas."""
    sc = replace(SCENARIOS["zipf"], build=_poisson(SharedPrefixSpec(num_groups=1, system_prompt_len=3000,
                                                                    question_len=128, output_len=64)))
    reqs = sc.build(100.0, random.Random(1), 800)
    opts = SimOptions(engines=4, num_blocks=4000, seed=1)
    tpot_ok = {}
    for name, cfg in (("default", "default"), ("no budget", _default_without_budget(tmp_path))):
        run = simulate(reqs, cfg, opts)
        tpot_ok[name] = sum(1 for r in run.results if (r.tpot or 0) <= 0.05) / len(run.results)
    assert tpot_ok["default"] > 0.95 > 0.8 > tpot_ok["no budget"]
