"""``plan`` in the cluster simulator: the minimum it returns is one (a replica fewer misses), and the form that
wins in a case built for it is chosen."""

from __future__ import annotations

import pytest

from llmd_kserve.bench.stats import SLO
from llmd_kserve.bench.workloads import SharedPrefixSpec
from llmd_kserve.errors import ConfigError
from llmd_kserve.plan import Deployment, PlanUnreachable, from_scenario, from_spec, plan
from llmd_kserve.plan.runs import Simulations

SMALL = SharedPrefixSpec(num_groups=4, prompts_per_group=8, system_prompt_len=1024, question_len=64, output_len=16)


def _full_run(wl, slo, d, rate, num_blocks=None):
    sims = Simulations(wl, slo, 0.95, profile="h100-llama8b", seeds=[0], num_blocks=num_blocks, gpus_per_replica=1,
                       early_stop=False)
    return sims(d, rate)


@pytest.mark.slow
def test_the_plan_is_the_minimum_a_replica_fewer_misses():
    wl = from_scenario("shared-prefix", duration_s=6)  # 32 groups x 3,000-token prefixes, 3,000 blocks per engine
    p = plan(wl, 60, configs=("default",), pd_configs=(), reference=(), max_replicas=8, headroom=False)
    n = p.deployment.replicas
    assert p.deployment.mode == "aggregated" and 1 < n < 8
    assert p.best.meets and p.best.attainment >= 0.95
    slo = SLO(1.0, 0.05)  # the scenario's
    assert p.slo == slo
    assert not _full_run(wl, slo, Deployment("default", 0, n - 1), 60, 3000).meets  # the neighbour below, to the end
    tried = sorted(e.deployment.replicas for e in p.evaluations)
    assert len(tried) < 8 and n - 1 in tried  # galloping + bisection, not every count


@pytest.mark.slow
def test_aggregated_wins_when_one_replica_is_enough():
    """Light load: one aggregated replica meets the SLO; P/D needs two engines at least."""
    p = plan(from_spec("small", SMALL, duration_s=6), 4, slo_ttft=0.5, slo_tpot=0.05, configs=("default",),
             pd_configs=("pd-predicted-ttft",), reference=(), max_replicas=4, headroom=False)
    assert p.deployment == Deployment("default", 0, 1) and p.best.gpus == 1


@pytest.mark.slow
def test_pd_wins_when_decodes_need_isolation():
    """rag-reasoning under a tight TPOT target (9 ms): long RAG prefills stall the reasoning decodes on aggregated
    replicas however many there are; one prefill + one decode replica keeps decode steps short."""
    wl = from_scenario("rag-reasoning", duration_s=10, num_requests=1)
    p = plan(wl, 4, slo_ttft=1.0, slo_tpot=0.009, configs=("default",), pd_configs=("pd-predicted-ttft",),
             reference=(), max_replicas=3, headroom=False)
    assert p.deployment == Deployment("pd-predicted-ttft", 1, 1)
    agg = [e for e in p.evaluations if e.deployment.mode == "aggregated"]
    assert agg and not any(e.meets for e in agg)


@pytest.mark.slow
def test_unreachable_slo_names_the_closest_deployment():
    with pytest.raises(PlanUnreachable, match="no deployment of up to 2 replicas meets the SLO.*closest was") as ei:  # 1 ms: below the engine front end's own overhead
        plan(from_spec("small", SMALL, duration_s=6), 20, slo_ttft=0.001, configs=("default",), pd_configs=(),
             reference=(), max_replicas=2, headroom=False)
    assert ei.value.best is not None and not ei.value.best.meets


def test_bad_arguments_are_config_errors():
    wl = from_spec("small", SMALL)
    for kwargs, field in (({"configs": ("nope",)}, "configs"), ({"pd_configs": ("default",)}, "pd_configs"),
                          ({"attainment": 1.5}, "attainment"), ({"seeds": ()}, "seeds")):
        with pytest.raises(ConfigError, match=field):
            plan(wl, 4, slo_ttft=1.0, **kwargs)
    with pytest.raises(ConfigError, match="rate"):
        plan(wl, [4, -1], slo_ttft=1.0)
    with pytest.raises(ConfigError, match="names no SLO"):
        plan(wl, 4)


def test_a_run_whose_engine_stalls_for_good_stops_as_a_miss():
    """600 blocks for 8 prefixes of 2,000 tokens: the one engine ends up holding work it cannot step, with no
    arrival left to wake it; the run stops (a miss) instead of scraping for ever."""
    wl = from_spec("tight", SharedPrefixSpec(num_groups=8, prompts_per_group=16, system_prompt_len=2000,
                                             question_len=64, output_len=32), duration_s=4)
    sims = Simulations(wl, SLO(0.2, 0.03), 0.95, profile="h100-llama8b", seeds=[0], num_blocks=600,
                       gpus_per_replica=1, early_stop=False)
    ev = sims(Deployment("default", 0, 1), 30)
    assert ev.stopped_early and not ev.meets
