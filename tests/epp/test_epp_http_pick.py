"""The HTTP pick through a real Envoy (``ext_authz`` with the body, instead of ext_proc): the pick is dialled,
governance refuses before any engine sees the request (401, 429 with ``Retry-After``), a client's
``kv_transfer_params`` are refused, prefix affinity holds across requests, and each pick's load is held for the
hand-off and then settled."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from llmd_kserve.epp.protocol import REASON_HEADER
from llmd_kserve.governance.keys import add_key
from tests.epp.gateway import gateway
from tests.epp.upstream import running_upstream, sse_body

pytestmark = pytest.mark.slow
BODY = {"model": "m", "prompt": "hello", "max_tokens": 5}


def _inflight(gw) -> dict:
    producers = gw.epp.server.picker.director.rt.scheduler.current.producers
    load = next(p for p in producers if p.type == "inflight-load-producer")._load
    return {ep: v for ep, v in load.items() if v != (0, 0)}


async def test_pick_is_dialled_and_the_body_and_answer_pass_unchanged(tmp_path):
    async with running_upstream() as a, running_upstream() as b, \
            gateway(tmp_path, [a.url, b.url], http_pick=True) as gw, \
            httpx.AsyncClient(base_url=gw.url, timeout=20) as c:
        for _ in range(4):
            r = await c.post("/v1/completions", json=BODY, headers={"x-gateway-destination-endpoint": "127.0.0.1:1"})
            assert r.status_code == 200, r.text
            assert r.json()["destination"] == f"127.0.0.1:{r.json()['port']}"  # the client's header was stripped
            assert r.headers["x-llmd-endpoint"] == (a.url, b.url)[r.json()["port"] == b.port]
        streamed = await c.post("/v1/completions", json={**BODY, "stream": True})
        assert streamed.status_code == 200 and streamed.content == sse_body()
        r = await c.post("/v1/completions", json={**BODY, "kv_transfer_params": {"do_remote_prefill": True}})
        assert r.status_code == 400 and r.headers[REASON_HEADER] == "invalid_request"
        assert (await c.post("/v1/nope", json=BODY)).status_code == 404
    assert sorted((len(a.seen), len(b.seen))) == [2, 3]  # round-robin over both
    targets = [d["target"] for d in gw.epp.state.decisions.recent()]
    assert len(targets) == 5
    assert targets.count(a.url) == len(a.seen) and targets.count(b.url) == len(b.seen)  # each pick was dialled


async def test_keys_and_rate_limits_answer_before_any_engine(tmp_path):
    keys = tmp_path / "keys.yaml"
    gold, _ = add_key(keys, tenant="gold", rpm=2)
    async with running_upstream() as up, \
            gateway(tmp_path, [up.url], http_pick=True, router={"keys_file": str(keys)}) as gw, \
            httpx.AsyncClient(base_url=gw.url, timeout=20) as c:
        r = await c.post("/v1/completions", json=BODY)
        assert r.status_code == 401 and r.json()["error"]["type"] == "AuthenticationError", r.text
        assert up.seen == []
        auth = {"Authorization": f"Bearer {gold}"}
        for _ in range(2):
            assert (await c.post("/v1/completions", json=BODY, headers=auth)).status_code == 200
        r = await c.post("/v1/completions", json=BODY, headers=auth)
        assert r.status_code == 429 and r.json()["error"]["type"] == "RateLimitError", r.text
        assert int(r.headers["Retry-After"]) >= 1 and r.headers[REASON_HEADER] == "rpm"
        assert len(up.seen) == 2


async def test_load_held_for_the_hand_off_then_settled(tmp_path):
    async with running_upstream() as a, \
            gateway(tmp_path, [a.url], config="load-only", http_pick=True) as gw, \
            httpx.AsyncClient(base_url=gw.url, timeout=20) as c:
        pick = gw.epp.server.http_pick
        assert pick.hold_s == pytest.approx(0.1)  # two scrapes of the test EPP (every 50 ms)
        pick.hold_s = 30.0
        assert (await c.post("/v1/completions", json=BODY)).status_code == 200
        assert list(_inflight(gw)) == [a.url]  # the answer is over; the EPP cannot know: still charged
        assert [d["outcome"] for d in gw.epp.state.decisions.recent()] == ["pending"]
        pick.hold_s = 0.05
        assert (await c.post("/v1/completions", json=BODY)).status_code == 200
        for _ in range(100):
            if gw.epp.state.decisions.recent()[-1]["outcome"] == "handed_off":
                break
            await asyncio.sleep(0.05)
        assert [d["outcome"] for d in gw.epp.state.decisions.recent()] == ["pending", "handed_off"]


async def test_no_stall_watch_when_the_http_pick_is_served(tmp_path):
    """The HTTP pick never sees an answer begin: watching for first bytes would suspect every endpoint."""
    async with running_upstream() as a, gateway(tmp_path, [a.url], http_pick=True) as gw:
        assert gw.epp.server.settings.response_mode == "full" and gw.epp.server.picker.director.stalls is None
