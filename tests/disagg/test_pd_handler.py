"""The P/D profile handler and its deciders inside the real Scheduler (no I/O)."""

from __future__ import annotations

import pytest

from llmd_kserve.builtin import REGISTRY
from llmd_kserve.config.build import build_scheduler
from llmd_kserve.config.loader import load_config, parse_config
from llmd_kserve.disagg.deciders import DECIDERS, PredictedTTFTDecider
from llmd_kserve.errors import ConfigError
from llmd_kserve.kvcache.index import KVIndex
from llmd_kserve.plugins.base import CycleState
from llmd_kserve.scheduling.scheduler import Scheduler
from llmd_kserve.types import Load, RequestOutcome
from tests.scheduling.sched_fixtures import eid, endpoint, make_ctx, prompt, request, store

PREFILL = (0, 1)
DECODE = (2, 3)


def pool(**decode_metrics):
    return ([endpoint(i, role="prefill") for i in PREFILL]
            + [endpoint(i, role="decode", **decode_metrics) for i in DECODE])


def sched(config: str, index=None) -> Scheduler:
    return build_scheduler(config, make_ctx(index if index is not None else KVIndex(max_keys=100_000)))


def test_registered_and_shipped():
    assert REGISTRY["pd-profile-handler"].kind == "profile-handler"
    assert set(DECIDERS) == {"always", "never", "uncached-tokens", "predicted-ttft"}
    for name in ("pd-predicted-ttft", "pd-always", "pd-uncached", "pd-never"):
        assert [p.name for p in load_config(name).scheduling_profiles] == ["decode", "prefill"]


def test_always_picks_decode_target_and_prefill_endpoint():
    s = sched("pd-always")
    res = s.schedule(request("r", prompt(1, 2000)), pool())
    assert res.target in {eid(i) for i in DECODE}
    assert res.prefill in {eid(i) for i in PREFILL}
    assert res.profile == "decode"
    assert any(k.startswith("prefill/") for k in res.scores) and any(k.startswith("decode/") for k in res.scores)


def test_never_prefills_locally_and_skips_the_prefill_profile():
    res = sched("pd-never").schedule(request("r", prompt(1, 2000)), pool())
    assert res.target in {eid(i) for i in DECODE} and res.prefill is None
    assert not any(k.startswith("prefill/") for k in res.scores)


def test_uncached_tokens_threshold_uses_the_decode_endpoints_prefix(index):
    s = sched("pd-uncached", index)
    long_prompt = prompt(5, 3000)
    assert s.schedule(request("a", prompt(2, 300)), pool()).prefill is None  # 300 <= 512
    assert s.schedule(request("b", long_prompt), pool()).prefill is not None
    for i in DECODE:  # the decode pool holds the long prompt's prefix: only ~200 tokens left to compute
        store(index, eid(i), long_prompt[:2800])
    res = s.schedule(request("c", long_prompt), pool())
    assert res.prefill is None


def test_no_prefill_endpoint_means_local():
    eps = [endpoint(i, role="decode") for i in DECODE]
    res = sched("pd-always").schedule(request("r", prompt(1, 2000)), eps)
    assert res.target in {eid(i) for i in DECODE} and res.prefill is None


def test_both_role_endpoint_is_never_its_own_prefill():
    eps = [endpoint(0, role="both")]
    res = sched("pd-always").schedule(request("r", prompt(1, 2000)), eps)
    assert res.target == eid(0) and res.prefill is None


def test_inflight_charges_the_prefill_endpoint_and_release():
    s = sched("pd-always")
    r = request("r", prompt(1, 2000))
    res = s.schedule(r, pool())
    inflight = next(p for p in s.producers if p.type == "inflight-load-producer")
    assert inflight.load(res.prefill) == (1, 2000) and inflight.load(res.target) == (1, 0)
    s.on_complete(r, res, RequestOutcome(ok=True))
    assert inflight.load(res.prefill) == (0, 0) and inflight.load(res.target) == (0, 0)


def test_on_prefill_complete_releases_only_the_prefill_leg():
    s = sched("pd-always")
    r = request("r", prompt(1, 2000))
    res = s.schedule(r, pool())
    inflight = next(p for p in s.producers if p.type == "inflight-load-producer")
    s.on_prefill_complete(r, res, RequestOutcome(ok=True, prompt_tokens=2000))
    assert inflight.load(res.prefill) == (0, 0) and inflight.load(res.target) == (1, 0)
    s.on_complete(r, res, RequestOutcome(ok=True))  # releases the decode leg; the prefill leg is not released twice
    assert inflight.load(res.prefill) == (0, 0) and inflight.load(res.target) == (0, 0)
    local = sched("pd-never")
    res = local.schedule(r, pool())
    local.on_prefill_complete(r, res, RequestOutcome(ok=True))  # no prefill leg: a no-op
    inflight = next(p for p in local.producers if p.type == "inflight-load-producer")
    assert inflight.load(res.target) == (1, 2000)


def _decider(**params) -> tuple[PredictedTTFTDecider, object]:
    ctx = make_ctx()
    return PredictedTTFTDecider(PredictedTTFTDecider.Params(**params), ctx), ctx


def _state(tokens, eps, inflight=None):
    st = CycleState(request("r", tokens), eps)
    st.token_ids = tuple(tokens)
    st.inflight = inflight or {}
    return st


def test_predicted_ttft_idle_pools_prefer_local():
    """With nothing queued anywhere, a remote prefill only adds a hop and a transfer."""
    dec, _ = _decider()
    d, p = endpoint(2, role="decode"), endpoint(0, role="prefill")
    v = dec.decide(_state(prompt(1, 6000), [p, d]), d, p)
    assert not v.remote and v.local_ttft_s < v.remote_ttft_s and v.uncached_tokens == 6000


def test_predicted_ttft_goes_remote_when_the_decode_endpoint_is_backed_up():
    dec, _ = _decider()
    d, p = endpoint(2, role="decode"), endpoint(0, role="prefill")
    dec.queue.add(d.id, 12_000)  # prefills already routed to the decode endpoint
    v = dec.decide(_state(prompt(1, 6000), [p, d]), d, p)
    assert v.remote and v.remote_ttft_s < v.local_ttft_s
    busy = endpoint(3, role="decode", waiting=30)  # or other routers' queue, seen in the metrics
    assert dec.decide(_state(prompt(1, 6000), [p, busy]), busy, p).remote


def test_predicted_ttft_in_flight_decodes_are_not_a_queue():
    """Requests already decoding on the decode endpoint (nothing waiting) don't delay a local prefill."""
    dec, _ = _decider()
    d, p = endpoint(2, role="decode", running=20), endpoint(0, role="prefill")
    st = _state(prompt(1, 200), [p, d], inflight={d.id: Load(20, 30_000)})
    assert not dec.decide(st, d, p).remote


def test_predicted_ttft_stays_local_when_the_prefill_pool_is_backed_up():
    dec, _ = _decider()
    d, p = endpoint(2, role="decode"), endpoint(0, role="prefill")
    dec.queue.add(d.id, 8_000)
    dec.queue.add(p.id, 60_000)
    assert not dec.decide(_state(prompt(1, 6000), [p, d]), d, p).remote


def test_prefill_queue_drains_with_the_clock():
    now = [0.0]
    ctx = make_ctx(clock=lambda: now[0])
    dec = PredictedTTFTDecider(PredictedTTFTDecider.Params(), ctx)
    q = dec.queue
    q.add(eid(1), 8000)
    q.add(eid(1), 8000)
    one = q.gpu_time(8000, 0)
    assert q.backlog_s(eid(1)) == pytest.approx(2 * one)
    now[0] = one
    assert q.backlog_s(eid(1)) == pytest.approx(one)
    now[0] = 10.0
    assert q.backlog_s(eid(1)) == 0.0
    q.add(eid(1), 100, 8000)  # a cached prefix costs little
    assert 0 < q.backlog_s(eid(1)) < one / 10


def test_scheduler_feeds_the_queue():
    s = sched("pd-predicted-ttft")
    handler = s.handler
    eps = pool()
    for i in range(6):
        s.schedule(request(str(i), prompt(10 + i, 6000)), eps)
    queue = handler.decider.queue
    backlogs = {e.id: queue.backlog_s(e.id) for e in eps}
    assert sum(backlogs.values()) > 0
    assert any(backlogs[eid(i)] > 0 for i in PREFILL)  # once the decode endpoints queue up, prefills go remote
    s.remove_endpoint(eid(0))
    assert queue.backlog_s(eid(0)) == 0.0


def test_predicted_ttft_short_prompt_is_local_and_itl_guard():
    dec, _ = _decider()
    d, p = endpoint(2, role="decode", running=64), endpoint(0, role="prefill")
    assert not dec.decide(_state(prompt(1, 100), [p, d]), d, p).remote
    guard, _ = _decider(max_local_step_s=0.05)
    v = guard.decide(_state(prompt(1, 6000), [p, d]), d, p)
    assert v.remote and "step" in v.reason
    assert not guard.decide(_state(prompt(1, 6000), [p, endpoint(3, role="decode")]), endpoint(3, role="decode"),
                            p).remote  # no running decodes to protect


def test_bad_decider_config_names_the_field():
    cfg = load_config("pd-always").model_dump(by_alias=True, exclude={"source"})
    cfg["plugins"][0]["parameters"] = {"decider": "sometimes"}
    with pytest.raises(ConfigError) as err:
        parse_config(cfg)
    assert "plugins[0].parameters" in err.value.path and "sometimes" in str(err.value)
    cfg["plugins"][0]["parameters"] = {"decider": "uncached-tokens", "deciderParameters": {"threshold": -1}}
    with pytest.raises(ConfigError):
        parse_config(cfg)
    cfg["plugins"][0]["parameters"] = {"decider": "never"}
    cfg["schedulingProfiles"].append({"name": "third", "plugins": []})
    with pytest.raises(ConfigError):
        parse_config(cfg)


def test_predicted_ttft_itl_guard_spills_when_the_prefill_pool_is_congested():
    dec, _ = _decider(max_local_step_s=0.05, remote_ttft_budget_s=0.5)
    d, p = endpoint(2, role="decode", running=32), endpoint(0, role="prefill")
    st = _state(prompt(1, 6000), [p, d])
    v = dec.decide(st, d, p)
    assert v.remote and "step" in v.reason and v.local_ttft_s < v.remote_ttft_s  # guard beats a faster local TTFT
    dec.queue.add(p.id, 100_000)  # seconds of queued prefills on the prefill pool
    v = dec.decide(st, d, p)
    assert not v.remote and "budget" in v.reason


def test_the_verdict_reaches_the_scheduling_result_and_the_decision_log():
    from llmd_kserve.control.decisions import DecisionLog

    remote = sched("pd-always").schedule(request("r1", prompt(1, 2000)), pool())
    local = sched("pd-never").schedule(request("r2", prompt(2, 2000)), pool())
    predicted = sched("pd-predicted-ttft").schedule(request("r3", prompt(3, 6000)), pool())
    assert remote.pd is not None and remote.pd.remote and remote.prefill is not None
    assert local.pd is not None and not local.pd.remote and local.pd.reason and local.prefill is None
    assert predicted.pd is not None and predicted.pd.local_ttft_s is not None and predicted.pd.remote_ttft_s is not None
    assert sched("default").schedule(request("r4", prompt(4, 100)), pool()).pd is None  # not a P/D config
    log = DecisionLog()
    log.add("r3", 0, predicted, 0.1)
    (d,) = log.recent()
    assert d["pd"] == {"remote": predicted.pd.remote, "reason": predicted.pd.reason,
                       "uncached_tokens": predicted.pd.uncached_tokens, "local_ttft_s": predicted.pd.local_ttft_s,
                       "remote_ttft_s": predicted.pd.remote_ttft_s}
