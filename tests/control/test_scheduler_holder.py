"""SchedulerHolder and ConfigReloader without HTTP: a request completes on the scheduler that scheduled it (the one
``acquire`` gave it), state carries over."""

from __future__ import annotations

import random

from llmd_kserve.config.build import build_scheduler
from llmd_kserve.config.loader import load_config, parse_config
from llmd_kserve.control.holder import SchedulerHolder
from llmd_kserve.control.reload import ConfigReloader, config_document
from llmd_kserve.defaults import DEFAULT_PROFILE
from llmd_kserve.latency import load_profile
from llmd_kserve.plugins.base import PluginContext
from llmd_kserve.tokenizer import SimTokenizer
from llmd_kserve.types import Endpoint, EndpointId, EndpointMetrics, EndpointState, LLMRequest, RequestOutcome

EPS = [EndpointState(Endpoint(EndpointId(f"http://10.0.0.{i}:8000")), EndpointMetrics(stale=False)) for i in (1, 2)]


def _ctx() -> PluginContext:
    return PluginContext(tokenizer=SimTokenizer(), index=None, rng=random.Random(0), clock=lambda: 0.0,
                         profile=load_profile(DEFAULT_PROFILE), block_size=16)


def _req(rid: str) -> LLMRequest:
    return LLMRequest(request_id=rid, model="m", body={}, token_ids=tuple(range(3, 67)))


def _inflight(s):
    return next(p for p in s.producers if p.type == "inflight-load-producer")


def _schedule(holder: SchedulerHolder, req: LLMRequest, eps):
    sched = holder.acquire()  # the caller keeps it (a ticket does): its callbacks go there
    return sched, sched.schedule(req, eps)


def _complete(holder: SchedulerHolder, sched, req: LLMRequest, result) -> None:
    sched.on_complete(req, result, RequestOutcome(ok=True))
    holder.release(sched)


def _with(doc_changes) -> dict:
    doc = config_document(load_config("load-only"))
    doc_changes(doc)
    return doc


def test_weight_change_keeps_plugin_instances_and_in_flight_load() -> None:
    sched = SchedulerHolder(build_scheduler("load-only", _ctx()))
    reloader = ConfigReloader(sched, "load-only")
    old = sched.current
    s1, r1 = _schedule(sched, _req("a"), EPS)
    doc = _with(lambda d: d["schedulingProfiles"][0]["plugins"][1].update(weight=9))
    reloader.apply(doc)
    assert sched.current is not old and reloader.active.generation == 1
    assert _inflight(sched.current) is _inflight(old)  # unchanged params: same instance, load still charged
    assert _inflight(sched.current).load(r1.target) == (1, 64)
    assert sched.current.reused_plugins(old)
    _complete(sched, s1, _req("a"), r1)
    assert _inflight(sched.current).load(r1.target) == (0, 0) and sched.in_flight() == 0


def test_changed_plugin_starts_fresh_and_old_requests_release_on_their_own_scheduler() -> None:
    sched = SchedulerHolder(build_scheduler("load-only", _ctx()))
    reloader = ConfigReloader(sched, "load-only")
    old = sched.current
    s1, r1 = _schedule(sched, _req("a"), EPS)
    doc = _with(lambda d: d["plugins"].append({"type": "inflight-load-producer",
                                              "parameters": {"requestTimeoutS": 5}}))
    reloader.apply(parse_config(doc))
    assert _inflight(sched.current) is not _inflight(old)
    s2, r2 = _schedule(sched, _req("b"), EPS)
    assert r1.config_hash != r2.config_hash and sched.in_flight() == 2
    _complete(sched, s1, _req("a"), r1)  # the old scheduler: s1
    assert _inflight(old).load(r1.target) == (0, 0)
    assert _inflight(sched.current).load(r2.target) == (1, 64)
    _complete(sched, s2, _req("b"), r2)
    assert sched.in_flight() == 0 and _inflight(sched.current).load(r2.target) == (0, 0)


def test_unchanged_config_is_a_no_op_and_bad_ones_leave_the_active_one() -> None:
    sched = SchedulerHolder(build_scheduler("load-only", _ctx()))
    reloader = ConfigReloader(sched, "load-only")
    current = sched.current
    assert reloader.apply(config_document(load_config("load-only"))).generation == 0 and sched.current is current
    bad = _with(lambda d: d["plugins"][2].update(parameters={"nope": 1}))
    try:
        reloader.apply(bad)
    except Exception as exc:
        assert getattr(exc, "path", "") == "plugins[2].parameters.nope"
    else:
        raise AssertionError("bad config applied")
    assert sched.current is current and reloader.last_error["param"] == "plugins[2].parameters.nope"


def test_pd_callbacks_of_a_request_go_to_the_scheduler_that_scheduled_it() -> None:
    pd_eps = [EndpointState(Endpoint(EndpointId("http://10.0.1.1:8000"), role="prefill"), EndpointMetrics(stale=False)),
              EndpointState(Endpoint(EndpointId("http://10.0.1.2:8000"), role="decode"), EndpointMetrics(stale=False))]
    sched = SchedulerHolder(build_scheduler("pd-always", _ctx()))
    reloader = ConfigReloader(sched, "pd-always")
    old = sched.current
    s1, r1 = _schedule(sched, _req("a"), pd_eps)
    assert r1.prefill == pd_eps[0].endpoint.id
    doc = config_document(load_config("pd-always"))
    spec = next(p for p in doc["plugins"] if p["type"] == "inflight-load-producer")
    spec["parameters"] = {"requestTimeoutS": 7}
    reloader.apply(doc)
    assert _inflight(sched.current) is not _inflight(old)
    assert _inflight(old).load(r1.prefill)[0] == 1
    s1.on_prefill_complete(_req("a"), r1, RequestOutcome(ok=True))
    assert _inflight(old).load(r1.prefill) == (0, 0) and _inflight(old).load(r1.target)[0] == 1
    _complete(sched, s1, _req("a"), r1)
    assert _inflight(old).load(r1.target) == (0, 0) and sched.in_flight() == 0
