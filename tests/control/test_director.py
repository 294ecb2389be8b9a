"""The director without a transport: a ticket settles on the scheduler that scheduled it (also across a config swap),
exactly once; the prompt is tokenized once and its ids reach the scheduler; refusals are OpenAI-shaped errors."""

from __future__ import annotations

import json

import pytest

from llmd_kserve.config.loader import load_config
from llmd_kserve.control.director import Director
from llmd_kserve.control.reload import config_document
from llmd_kserve.control.runtime import Runtime
from llmd_kserve.control.settings import RouterSettings
from llmd_kserve.errors import HTTPError
from llmd_kserve.types import EndpointMetrics, EndpointState

EPS = ["http://10.0.0.1:8000", "http://10.0.0.2:8000"]


def _director(**settings) -> Director:
    return Director(Runtime.build(RouterSettings(config="load-only", **settings), EPS))


def _states(d: Director) -> list[EndpointState]:
    return [EndpointState(e, EndpointMetrics(stale=False)) for e in d.rt.pool.snapshot]


def _inflight(sched):
    return next(p for p in sched.producers if p.type == "inflight-load-producer")


def _ticket(d: Director, prompt: str = "hello there"):
    raw = json.dumps({"model": "m", "prompt": prompt, "max_tokens": 4}).encode()
    return d.prepare({}, raw, "completion", "127.0.0.1", d.authenticate({}))


def test_tickets_settle_on_their_own_scheduler_across_a_swap_and_only_once() -> None:
    d = _director()
    old = d.rt.scheduler.current
    tickets = [_ticket(d, f"prompt {i}") for i in range(50)]
    for t in tickets:
        d.schedule(t, candidates=_states(d))
    doc = config_document(load_config("load-only"))
    doc["plugins"].append({"type": "inflight-load-producer", "parameters": {"requestTimeoutS": 5}})
    d.rt.reloader.apply(doc)  # a new in-flight producer: the old one keeps the 50 requests' load
    assert d.rt.scheduler.current is not old and d.rt.scheduler.in_flight() == 50
    new_ticket = _ticket(d)
    d.schedule(new_ticket, candidates=_states(d))
    for t in tickets:
        assert t.placement is not None and t.placement.scheduler is old
        assert d.settle(t, 200) is None  # no gateway part configured: nothing to await
        assert d.settle(t, 200) is None  # a second settle does nothing
    assert all(v == (0, 0) for v in _inflight(old)._load.values())
    assert _inflight(d.rt.scheduler.current).load(new_ticket.placement.result.target)[0] == 1
    d.settle(new_ticket, 499)
    assert d.rt.scheduler.in_flight() == 0


def test_a_failed_attempt_is_completed_and_the_retry_excludes_it() -> None:
    d = _director()
    t = _ticket(d)
    first = d.schedule(t, candidates=_states(d)).target
    d.failed(t, "connect")
    second = d.schedule(t, {first}, candidates=_states(d)).target
    assert second != first and t.attempts == 2 and d.rt.scheduler.in_flight() == 1
    assert [x["outcome"] for x in d.rt.decisions.recent()][:1] == ["connect"]
    d.settle(t, 200)
    assert d.rt.scheduler.in_flight() == 0


def test_prompt_is_tokenized_once_when_a_limit_needs_it_and_the_ids_reach_the_scheduler() -> None:
    d = _director(max_prompt_tokens=40)
    calls = []
    encode = d.rt.tokenizer.encode
    d.rt.tokenizer.encode = lambda text: calls.append(text) or encode(text)  # type: ignore[method-assign]
    t = _ticket(d, "word " * 5)
    assert len(calls) == 1 and t.request.token_ids is not None and t.prompt_tokens == len(t.request.token_ids)
    with pytest.raises(HTTPError) as exc:
        _ticket(d, "word " * 100)
    assert exc.value.status == 413 and exc.value.type == "RequestTooLargeError"


def test_bad_input_and_missing_keys_are_openai_errors() -> None:
    d = _director(api_keys=("secret",))
    with pytest.raises(HTTPError) as exc:
        d.authenticate({})
    assert exc.value.status == 401
    assert d.authenticate({"Authorization": "Bearer secret"})[1] is not None
    with pytest.raises(HTTPError) as exc:
        d.prepare({}, b"{not json", "completion", None, (None, None))
    assert exc.value.status == 400
    with pytest.raises(HTTPError) as exc:
        d.prepare({"x-request-id": "x" * 200}, b'{"prompt": "a"}', "completion", None, (None, None))
    assert exc.value.status == 400 and exc.value.param == "x-request-id"
