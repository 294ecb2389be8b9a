"""``decode-budget-filter``: endpoints whose decode batch would step slower than the budget are dropped."""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

import yaml
from sched_fixtures import eid, endpoint, make_ctx, prompt, request, store
from test_scheduler import one_profile

import llmd_kserve
from llmd_kserve.bench.scenarios import SCENARIOS, _poisson
from llmd_kserve.bench.workloads import SharedPrefixSpec
from llmd_kserve.cluster_sim import SimOptions, simulate
from llmd_kserve.config.build import build_scheduler
from llmd_kserve.config.loader import parse_config
from llmd_kserve.kvcache.index import KVIndex
from llmd_kserve.latency import load_profile


def budget_sched(max_step: float = 0.04, margin: float | None = None):
    params: dict = {"maxStepS": max_step} | ({} if margin is None else {"margin": margin})
    cfg = one_profile(("decode-budget-filter", params, None), ("round-robin-picker", None, None))
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


def _steps(*running: int, tokens: int = 3000) -> list[float]:
    h100 = load_profile("h100-llama8b")
    return [h100.step_time(0, 0, n + 1, (n + 1) * tokens) for n in running]


def test_margin_keeps_an_endpoint_just_over_budget_beside_the_lightest() -> None:
    """Without ``margin`` the one endpoint under the budget draws every request; with it, one just over the budget
    (within 10% of the lightest step) stays a candidate, one far over does not."""
    light, near, far = _steps(260, 275, 400)
    assert light <= 0.04 < near <= 1.1 * light < far
    eps = [endpoint(0, running=260), endpoint(1, running=275), endpoint(2, running=400)]
    assert set(budget_sched().schedule(request("r", prompt(3, 3000)), eps).totals) == {eps[0].id}
    with_margin = budget_sched(margin=0.1).schedule(request("r", prompt(3, 3000)), eps)
    assert set(with_margin.totals) == {eps[0].id, eps[1].id}


def test_margin_sends_a_saturated_pool_to_its_lightest_batches() -> None:
    light, near, far = _steps(300, 310, 400)
    assert 0.04 < light < near <= 1.1 * light < far
    eps = [endpoint(0, running=300), endpoint(1, running=310), endpoint(2, running=400)]
    assert set(budget_sched().schedule(request("r", prompt(4, 3000)), eps).totals) == {e.id for e in eps}
    with_margin = budget_sched(margin=0.1).schedule(request("r", prompt(4, 3000)), eps)
    assert set(with_margin.totals) == {eps[0].id, eps[1].id}


def _default(margin: float | None) -> dict:
    cfg = yaml.safe_load((Path(llmd_kserve.__file__).parent / "config" / "shipped" / "default.yaml").read_text())
    budget = next(p for p in cfg["plugins"] if p["type"] == "decode-budget-filter")
    assert budget["parameters"]["margin"] == 0.1  # what the shipped default sets
    if margin is None:
        del budget["parameters"]["margin"]
    return cfg


def test_default_moves_a_request_off_a_saturated_prefix_holder_only_when_its_batch_is_clearly_heavier() -> None:
    """The whole pool over the decode budget: the shipped default (``margin`` 0.1) sends the request away from the
    replica caching its prefix when that replica's batch is clearly the heaviest, where the default without the
    margin stuck to it; with even batches prefix affinity still decides, with or without the margin."""
    shared = prompt(7, 3000)
    picks = {}
    for margin in (None, 0.1):
        for load in ("even", "holder heavy"):
            index = KVIndex(max_keys=100_000)
            store(index, str(eid(0)), shared)
            sched = build_scheduler(parse_config(_default(margin)), make_ctx(index))
            holder_running = 300 if load == "even" else 400
            eps = [endpoint(0, running=holder_running), endpoint(1, running=300), endpoint(2, running=300)]
            picks[margin, load] = sched.schedule(request("r", shared + prompt(8, 100)), eps).target
    assert picks[None, "even"] == picks[0.1, "even"] == eid(0)
    assert picks[None, "holder heavy"] == eid(0)
    assert picks[0.1, "holder heavy"] in {eid(1), eid(2)}
