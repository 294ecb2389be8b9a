"""Load scorers count the router's own requests sent since each endpoint's last scrape (no herding between scrapes)."""

from __future__ import annotations

from collections import Counter

from llmd_kserve.config.build import build_scheduler
from llmd_kserve.config.loader import parse_config
from llmd_kserve.plugins.base import CycleState
from llmd_kserve.types import RequestOutcome
from tests.scheduling.sched_fixtures import endpoint, make_ctx, prompt, request


def config(scorer: str, params: dict | None = None) -> dict:
    return {"plugins": [{"type": scorer, "parameters": params}],
            "schedulingProfiles": [{"name": "default", "plugins": [{"pluginRef": scorer, "weight": 1}]}]}


def burst(cfg: dict, eps, n: int = 8) -> Counter:
    sched = build_scheduler(parse_config(cfg), make_ctx(clock=lambda: 1.0))
    return Counter(sched.schedule(request(str(i), prompt(i, 400)), eps).target for i in range(n))


def test_queue_scorer_spreads_a_burst_between_scrapes():
    # endpoint 0 had the shortest queue at the last scrape (t=0.5); the burst arrives at t=1.0
    eps = [endpoint(0, waiting=0, scraped_at=0.5), *(endpoint(i, waiting=2, scraped_at=0.5) for i in (1, 2, 3))]
    herded = burst(config("queue-scorer", {"countUnscraped": False}), eps)
    assert herded == Counter({eps[0].id: 8})
    spread = burst(config("queue-scorer"), eps)
    assert max(spread.values()) <= 3 and len(spread) == 4  # 0 takes two first, then all queues are level


def test_kv_utilization_scorer_projects_unscraped_prompt_tokens():
    eps = [endpoint(0, kv_usage=0.10, num_gpu_blocks=100, block_size=16, scraped_at=0.5),
           endpoint(1, kv_usage=0.20, num_gpu_blocks=100, block_size=16, scraped_at=0.5)]
    assert burst(config("kv-cache-utilization-scorer", {"countUnscraped": False}), eps, 4) == Counter({eps[0].id: 4})
    spread = burst(config("kv-cache-utilization-scorer"), eps, 4)  # 400 tokens = 25 blocks = 25% each
    assert spread == Counter({eps[0].id: 2, eps[1].id: 2})


def test_only_charges_after_the_scrape_and_still_in_flight_are_unscraped():
    sched = build_scheduler(parse_config(config("queue-scorer")), make_ctx(clock=lambda: 1.0))
    eps = [endpoint(0, scraped_at=0.5), endpoint(1, scraped_at=0.5), endpoint(2, scraped_at=0.5)]
    a, b = request("a", prompt(1, 50)), request("b", prompt(2, 50))
    ra, rb = sched.schedule(a, eps), sched.schedule(b, eps)
    assert ra.target != rb.target
    producer = next(p for p in sched.producers if p.type == "inflight-load-producer")
    state = CycleState(request("c", prompt(3, 50)), eps)
    producer.produce(state)
    assert {k: v[0] for k, v in state.unscraped.items()} == {ra.target: 1, rb.target: 1}
    sched.on_complete(a, ra, RequestOutcome(ok=True))  # a finished; b's endpoint was scraped after b was sent
    later = [endpoint(i, scraped_at=2.0 if e.id == rb.target else 0.5) for i, e in enumerate(eps)]
    state = CycleState(request("d", prompt(4, 50)), later)
    producer.produce(state)
    assert state.unscraped == {}
    assert producer.load(rb.target) == (1, 50)  # still in flight, just visible to the metrics now
