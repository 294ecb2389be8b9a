"""Per-request objectives in the director: read once from the headers (bad values: 400), a sheddable request no
endpoint serves in time shed with 429 + Retry-After or held back (``onMiss: queue``), counted per priority band."""

from __future__ import annotations

import asyncio
import json

import pytest

from llmd_kserve.config.loader import load_config
from llmd_kserve.control import slo
from llmd_kserve.control.director import Director
from llmd_kserve.control.reload import config_document
from llmd_kserve.control.runtime import Runtime
from llmd_kserve.control.settings import RouterSettings
from llmd_kserve.control.ticket import Hold
from llmd_kserve.errors import HTTPError
from llmd_kserve.types import EndpointMetrics, EndpointState, Objective

EPS = ["http://10.0.0.1:8000", "http://10.0.0.2:8000"]
SHED = {"x-llmd-priority": "-1", "x-llm-d-slo-ttft-ms": "500"}


def _director(**admitter) -> Director:
    d = Director(Runtime.build(RouterSettings(config="default"), EPS))
    if admitter:
        doc = config_document(load_config("default"))
        for p in doc["plugins"]:
            if p["type"] == "latency-slo-admitter":
                p.setdefault("parameters", {}).update(admitter)
        d.rt.reloader.apply(doc)
    return d


def _states(d: Director, waiting: int) -> list[EndpointState]:
    """Every endpoint with ``waiting`` queued requests of 512 tokens seen by the metrics (the default config's
    TTFT model ignores them: its backlog is the router's own) and as many in flight from this router."""
    return [EndpointState(e, EndpointMetrics(stale=False, running=8, waiting=waiting)) for e in d.rt.pool.snapshot]


def _ticket(d: Director, headers: dict[str, str], prompt: str = "hello there"):
    raw = json.dumps({"model": "m", "prompt": prompt, "max_tokens": 4}).encode()
    return d.prepare(headers, raw, "completion", "127.0.0.1", d.authenticate({}))


def _count(d: Director, band: str, outcome: str) -> float:
    return d.rt.metrics.slo_requests.labels(band, outcome)._value.get()


def _overload(d: Director, n: int = 400) -> None:
    """``n`` long requests in flight (priority 0): the prefill backlog is seconds long everywhere."""
    for i in range(n):
        d.schedule(_ticket(d, {}, f"long prompt {i} " + "word " * 2000), candidates=_states(d, 0))


@pytest.mark.parametrize(("headers", "expect"), [
    ({}, None),
    ({"x-llmd-priority": "-2"}, Objective(-2)),
    ({"x-llm-d-slo-ttft-ms": "250", "x-llm-d-slo-tpot-ms": "40"}, Objective(0, 0.25, 0.04)),
    ({"x-slo-ttft-ms": "1000", "x-llmd-priority": "3"}, Objective(3, 1.0, None)),  # llm-d's older alias
])
def test_objective_headers(headers, expect) -> None:
    assert slo.read_objective(headers) == expect


@pytest.mark.parametrize(("name", "value"), [("x-llm-d-slo-ttft-ms", "fast"), ("x-llm-d-slo-ttft-ms", "0"),
                                             ("x-llm-d-slo-tpot-ms", "-5"), ("x-slo-tpot-ms", "nan"),
                                             ("x-llmd-priority", "high"), ("x-llmd-priority", "1000")])
def test_a_bad_objective_header_is_a_400_naming_it(name, value) -> None:
    d = _director()
    with pytest.raises(HTTPError) as err:
        _ticket(d, {name: value})
    assert err.value.status == 400 and err.value.param == name


def test_under_overload_the_sheddable_request_gets_429_and_priority_zero_is_scheduled() -> None:
    d = _director()
    _overload(d)
    shed = _ticket(d, SHED)
    with pytest.raises(HTTPError) as err:
        d.schedule(shed, candidates=_states(d, 0))
    assert err.value.status == 429 and int(err.value.headers["Retry-After"]) >= 1
    assert err.value.headers["x-llmd-drop-reason"] == "slo_unmet"
    keep = _ticket(d, {"x-llmd-priority": "0", "x-llm-d-slo-ttft-ms": "500"})
    assert d.schedule(keep, candidates=_states(d, 0)).target
    assert (_count(d, "-1", "shed"), _count(d, "-1", "admitted"), _count(d, "0", "admitted")) == (1, 0, 1)


def test_without_load_the_sheddable_request_is_admitted_and_its_answer_counted() -> None:
    clock = [0.0]
    d = Director(Runtime.build(RouterSettings(config="default"), EPS), clock=lambda: clock[0])
    t = _ticket(d, {**SHED, "x-llm-d-slo-tpot-ms": "50"})
    d.schedule(t, candidates=_states(d, 0))
    clock[0] = 0.3
    d.answer_began(t)
    clock[0] = 0.4
    t.relayed_tokens = 3  # not streamed: no TPOT is measured
    d.settle(t, 200)
    assert [_count(d, "-1", o) for o in ("admitted", "ttft_met", "ttft_missed", "tpot_met")] == [1, 1, 0, 0]


def test_queue_mode_holds_the_request_back_then_sheds_it_after_max_wait() -> None:
    d = _director(onMiss="queue", maxWaitS=0.2, pollS=0.05)
    _overload(d)
    t = _ticket(d, SHED)
    with pytest.raises(Hold):
        d.schedule(t, candidates=_states(d, 0), may_wait=True)

    with pytest.raises(HTTPError) as err:
        asyncio.run(d.place(t))  # the runtime's own endpoint states: not scraped, 400 requests in flight
    assert err.value.status == 429 and t.waited_s >= 0.2
    assert t.request.objective is not None and t.request.objective.ttft_s < 0.5  # the wait counts against it
    assert (_count(d, "-1", "queued"), _count(d, "-1", "shed")) == (1, 1)
