"""Router replicas in the simulator: one router reproduces the recorded results exactly; several have their own
state, a balancer spreads requests over them, and the shared load view carries charges between them."""

from __future__ import annotations

import json
import random
from dataclasses import replace

import pytest

from llmd_kserve.bench.workloads import ArrivalSpec, SharedPrefixSpec, make_workload
from llmd_kserve.cluster_sim import ClusterSim, SimOptions
from llmd_kserve.cluster_sim.events import Share
from llmd_kserve.cluster_sim.routers import Balancer
from llmd_kserve.types import NO_LOAD
from tests.cluster_sim.one_router_cases import GOLDEN, cases, fingerprint, run_case

SPEC = SharedPrefixSpec(num_groups=8, prompts_per_group=8, system_prompt_len=1024, question_len=64, output_len=16)


def _reqs(rate: float = 40.0, seed: int = 0):
    return make_workload(SPEC, ArrivalSpec(pattern="poisson", rate=rate), random.Random(seed))


@pytest.mark.parametrize("name", list(cases()))
def test_one_router_reproduces_the_recorded_results(name: str) -> None:
    assert fingerprint(run_case(name, routers=1)) == json.loads(GOLDEN.read_text())[name]


def test_more_routers_change_the_run() -> None:
    """The fingerprint can fail: two replicas that know only their own requests route differently."""
    assert fingerprint(run_case("precise-prefix", routers=2)) != json.loads(GOLDEN.read_text())["precise-prefix"]


def test_each_router_has_its_own_scheduler_index_and_scrapes() -> None:
    sim = ClusterSim("precise-prefix", SimOptions(engines=3, routers=2))
    run = sim.run(_reqs())
    a, b = sim.routers
    assert a.scheduler is not b.scheduler and a.index is not b.index
    assert len(a.index) > 0 and len(b.index) > 0  # both fed by the same engines' KV events
    assert a.states is not b.states
    assert {s.metrics.scraped_at for s in a.states} != {s.metrics.scraped_at for s in b.states}  # own phase
    per_router = [sum(r.extra["router"] == k for r in run.results) for k in (0, 1)]
    assert per_router == [32, 32]  # round-robin
    assert all(r.ok for r in run.results)


def test_each_router_gets_kv_events_after_its_own_delay() -> None:
    """A replica whose KV events never arrive has an empty index while the other's fills."""
    sim = ClusterSim("precise-prefix", SimOptions(engines=3, routers=2, router_kv_event_delays=(0.001, 1e6)))
    run = sim.run(_reqs())
    assert all(r.ok for r in run.results)
    assert len(sim.routers[0].index) > 0 and len(sim.routers[1].index) == 0
    assert [r.kv_event_delay for r in sim.routers] == [0.001, 1e6]


def test_balancers() -> None:
    reqs = _reqs()
    rr = Balancer("round-robin", 3, seed=0)
    assert [rr.pick(r) for r in reqs[:6]] == [0, 1, 2, 0, 1, 2]
    rnd = Balancer("random", 3, seed=0)
    picks = [rnd.pick(r) for r in reqs]
    assert set(picks) == {0, 1, 2}
    by_group: dict[str | None, set[int]] = {}
    ph = Balancer("prefix-hash", 3, seed=0)
    for r in reqs:
        by_group.setdefault(r.group, set()).add(ph.pick(r))
    assert all(len(ks) == 1 for ks in by_group.values()) and len(set().union(*by_group.values())) > 1
    with pytest.raises(ValueError, match="balancer"):
        Balancer("sticky", 2, seed=0)  # type: ignore[arg-type]


def test_random_balancer_is_deterministic_given_the_seed() -> None:
    reqs = _reqs()
    a, b = Balancer("random", 4, seed=3), Balancer("random", 4, seed=3)
    assert [a.pick(r) for r in reqs] == [b.pick(r) for r in reqs]


def test_shared_load_view_carries_charges_and_releases_after_the_delay() -> None:
    sim = ClusterSim("default", SimOptions(engines=2, routers=2, shared_load_delay=0.01))
    assert sim.shared is not None
    pushed: list = []
    sim.shared._push = lambda t, ev: pushed.append((t, ev))  # capture instead of the heap
    r0, r1 = sim.routers
    load0 = next(p for p in r0.scheduler.producers if p.type == "inflight-load-producer")
    load1 = next(p for p in r1.scheduler.producers if p.type == "inflight-load-producer")
    rec = sim._route(_reqs()[0], 0.0, {}, [])  # balanced to router 0
    assert rec is not None and rec.router == 0
    target = rec.sched.target
    assert load0.load(target).requests == 1 and load1.load(target) == NO_LOAD  # not yet: the delay
    (t, share), = pushed
    assert t == pytest.approx(0.01) and share.origin == 0 and share.hook == "on_scheduled"
    sim.shared.apply(share)
    assert load1.load(target) == load0.load(target)  # router 1 now counts router 0's request
    assert load1.prefill_backlog().get(target, 0.0) > 0
    sim._complete(rec, replace_outcome())
    sim.shared.apply(pushed[-1][1])
    assert load0.load(target) == NO_LOAD and load1.load(target) == NO_LOAD


def replace_outcome():
    from llmd_kserve.types import RequestOutcome

    return RequestOutcome(ok=True, prompt_tokens=1088, cached_tokens=0, completion_tokens=16)


def test_without_the_shared_view_a_router_sees_only_its_own_requests() -> None:
    sim = ClusterSim("default", SimOptions(engines=2, routers=2))
    assert sim.shared is None
    rec = sim._route(_reqs()[0], 0.0, {}, [])
    assert rec is not None
    load1 = next(p for p in sim.routers[1].scheduler.producers if p.type == "inflight-load-producer")
    assert load1.load(rec.sched.target) == NO_LOAD


def test_shared_view_is_applied_in_a_run() -> None:
    sim = ClusterSim("default", SimOptions(engines=3, routers=3, shared_load_delay=0.002))
    run = sim.run(_reqs(rate=80.0))
    assert all(r.ok for r in run.results) and sim.shared is not None
    assert sim.shared.published >= 2 * len(run.results)  # every charge and its release
    for _, _, ev in sorted(sim._heap, key=lambda x: (x[0], x[1])):  # the releases still on their way at the end
        if isinstance(ev, Share):
            sim.shared.apply(ev)
    for r in sim.routers:  # then every charge is released everywhere
        load = next(p for p in r.scheduler.producers if p.type == "inflight-load-producer")
        assert all(load.load(e.id) == NO_LOAD for e in sim.engines)


def test_a_run_that_cannot_finish_ends_with_failures_not_a_hang() -> None:
    """Four independent replicas on a KV-starved cluster leave an engine idle with work it cannot schedule (the
    engine's known no-progress case): the stuck requests fail with a 500 instead of the loop scraping forever."""
    run = run_case("default", routers=4)
    config, _, reqs = cases()["default"]
    assert len(run.results) == len(reqs)
    assert all(r.status == 500 and "stalled" in (r.error or "") for r in run.results if not r.ok)


@pytest.mark.parametrize("bad", [{"routers": 0}, {"balancer": "sticky"}, {"routers": 2, "router_kv_event_delays": (0.1,)},
                                 {"routers": 2, "shared_load_delay": -1.0}])
def test_bad_router_options(bad) -> None:
    with pytest.raises(ValueError):
        SimOptions(**bad)


def test_held_requests_stay_with_their_router() -> None:
    """latency-slo-admitter holds a request back on the replica that got it; it arrives again there."""
    config, opts, reqs = cases()["slo-burst"]
    run = ClusterSim(config, replace(opts, routers=3, balancer="random")).run(reqs)
    assert len(run.results) == len(reqs)


def test_shared_view_can_carry_the_approximate_prefix_index() -> None:
    """With ``approx-prefix-cache-producer`` shared, a replica learns where another just sent a prefix."""
    from llmd_kserve.bench.sim_configs import sim_config

    def peer_match(shared_plugins: tuple[str, ...]) -> int:
        sim = ClusterSim(sim_config("llm-d-optimized-baseline"),
                         SimOptions(engines=2, routers=2, shared_load_delay=0.0, shared_plugins=shared_plugins))
        assert sim.shared is not None
        pushed: list = []
        sim.shared._push = lambda t, ev: pushed.append(ev)
        reqs = _reqs()
        first = reqs[0]
        second = next(r for r in reqs[1:] if r.group == first.group)  # the same system prompt
        rec = sim._route(first, 0.0, {}, [])
        assert rec is not None and rec.router == 0
        for ev in pushed:
            sim.shared.apply(ev)
        again = sim._route(second, 0.0, {}, [])  # round-robin: router 1
        assert again is not None and again.router == 1
        return again.sched.predicted_cached_tokens if again.sched.target == rec.sched.target else 0

    assert peer_match(("inflight-load-producer",)) == 0
    assert peer_match(("inflight-load-producer", "approx-prefix-cache-producer")) >= 1024 - 64
