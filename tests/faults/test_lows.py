"""Low findings: L2/L10 engine validation, L4 KV-event subscriber limits and counters, L6 no aiohttp internals in
a broken stream's error event, L9 salted audit hashes; OutlierEjector rules on a fake clock."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import urllib.request

import aiohttp
import msgspec
import pytest
import zmq
import zmq.asyncio

from llmd_kserve.control.outliers import EjectionPolicy, OutlierEjector
from llmd_kserve.control.requests import validate_request
from llmd_kserve.engine_sim.server import running_engine
from llmd_kserve.governance.pipeline import Governance
from llmd_kserve.kvcache.events import BlockStored, EventBatch, decode_payload, encode_payload
from llmd_kserve.kvcache.index import KVIndex
from llmd_kserve.kvcache.subscriber import KVEventSubscriber
from llmd_kserve.metrics.parse import MAX_COUNT, parse_vllm_metrics
from llmd_kserve.types import Endpoint, EndpointId
from tests.faults.procs import engine, metric, request, router, running, wait_for

pytestmark = pytest.mark.slow  # real processes and sockets: the full suite runs them, the fast loop does not

MODEL = "llama-8b-shape"


@pytest.mark.parametrize("path, body, param", [
    ("/v1/completions/render", {"prompt": "hi", "presence_penalty": "x"}, "presence_penalty"),
    ("/v1/completions", {"prompt": "hi", "top_p": "x"}, "top_p"),
    ("/v1/completions", {"prompt": "hi", "logprobs": 1}, "logprobs"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": ["a"]}]}, "messages"),
    ("/v1/completions", {"prompt": "hi", "max_tokens": "5"}, "max_tokens"),
    ("/_sim/nixl/pull", b"not json", None),
    ("/_sim/nixl/pull", [], None),
])
async def test_engine_rejects_bad_fields_with_400(path, body, param):
    async with running_engine(port=0, model=MODEL, time_scale=0.0) as eng, aiohttp.ClientSession() as s:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        async with s.post(eng.url + path, data=data, headers={"Content-Type": "application/json"}) as r:
            assert r.status == 400, await r.text()
            err = (await r.json())["error"]
            assert err["param"] == param
            if param == "max_tokens":
                assert "must be an integer" in err["message"]


def test_negative_hashes_are_folded_on_the_fast_path():
    raw = encode_payload(EventBatch(1.0, [BlockStored([-1, 5], -2, [1] * 16, 16)]))
    ev = decode_payload(raw).events[0]
    assert ev.block_hashes == [2**64 - 1, 5] and ev.parent_block_hash == 2**64 - 2


def test_metric_values_are_clamped():
    text = ('vllm:num_requests_waiting{engine="0"} -1e18\nvllm:num_requests_running{engine="0"} +Inf\n'
            'vllm:prefix_cache_hits_total{engine="0"} -5\n')
    m = parse_vllm_metrics(text, 0.0)
    assert (m.waiting, m.running, m.prefix_hits) == (0, MAX_COUNT, 0.0)


async def test_oversized_kv_event_message_is_dropped_by_zmq():
    ctx = zmq.asyncio.Context()
    pub = ctx.socket(zmq.PUB)
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    sub = KVEventSubscriber(KVIndex(), context=ctx, max_message_bytes=4096)
    eid = EndpointId("http://e:1")
    sub.add(Endpoint(eid, kv_events=f"tcp://127.0.0.1:{port}"))
    good = encode_payload(EventBatch(1.0, [BlockStored([7], None, [1] * 16, 16)]))
    try:
        await sub.start()
        seq = 0
        deadline = time.monotonic() + 20
        while sub.stats()[eid].messages == 0 and time.monotonic() < deadline:  # wait for the subscription
            seq += 1
            await pub.send_multipart([b"kv", seq.to_bytes(8, "big"), good])
            await asyncio.sleep(0.05)
        assert sub.stats()[eid].messages > 0
        before = sub.stats()[eid]
        await pub.send_multipart([b"kv", (seq + 1).to_bytes(8, "big"), os.urandom(64 * 1024)])  # too big: dropped
        await asyncio.sleep(0.3)
        st = sub.stats()[eid]
        assert st.decode_errors == before.decode_errors == 0
        assert st.messages == before.messages
    finally:
        await sub.stop()
        pub.close(0)
        ctx.term()


def test_kv_event_counters_are_exported(tmp_path):
    eng = engine(tmp_path, "e0", kv=True)
    with running(eng):
        kv = eng.output().split("kv_events=")[1].split()[0]
        r = router(tmp_path, f"{eng.url}#kv={kv}")
        with running(r):
            assert request(r.url + "/v1/completions", {"prompt": "hello " * 40, "max_tokens": 2})[0] == 200
            assert wait_for(lambda: metric(request(r.url + "/metrics")[1].decode(),
                                           "llmd_router_kv_events_messages_total", endpoint=eng.url) >= 1)
            text = request(r.url + "/metrics")[1].decode()
            for name in ("gaps", "missed", "restarts", "decode_errors", "blocks"):
                assert f"llmd_router_kv_events_{name}_total" in text
            assert metric(text, "llmd_router_endpoint_scrape_scrapes_total", endpoint=eng.url) > 0


def test_killed_engine_mid_stream_error_event_is_clean(tmp_path):
    eng = engine(tmp_path, "e0", "--time-scale", "1")
    with running(eng):
        r = router(tmp_path, eng.url)
        with running(r):
            body = json.dumps({"prompt": "x", "max_tokens": 4000, "ignore_eos": True, "stream": True}).encode()
            req = urllib.request.Request(r.url + "/v1/completions", data=body,
                                         headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=30) as resp:
                assert resp.readline().startswith(b"data: {")
                os.kill(eng.pid, signal.SIGKILL)
                events = [ln[6:].strip() for ln in resp if ln.startswith(b"data: ")]
            err = json.loads(events[-1])["error"]
            assert err == {"message": "upstream connection lost mid-stream", "type": "BadGatewayError",
                           "param": None, "code": 502}
            text = request(r.url + "/metrics")[1].decode()
            assert metric(text, "llmd_router_requests_total", route="/v1/completions", status="502") == 1


def test_audit_hash_is_salted(caplog):
    import logging

    req = validate_request(msgspec.json.encode({"prompt": "yes"}), "completion")
    with caplog.at_level(logging.INFO, logger="llmd_kserve.audit"):
        Governance(audit_mode="hash").audit("r", req, "e", None, None)
        Governance(audit_mode="hash").audit("r", req, "e", None, None)
        Governance(audit_mode="hash", audit_salt=b"k").audit("r", req, "e", None, None)
        Governance(audit_mode="hash", audit_salt=b"k").audit("r", req, "e", None, None)
    a, b, c, d = (json.loads(r.getMessage())["prompt_hmac_sha256"] for r in caplog.records)
    import hashlib

    assert a != b and c == d and hashlib.sha256(b'"yes"').hexdigest() not in (a, b, c)


def test_ejection_backs_off_and_resets_on_success():
    now = [0.0]
    ej = OutlierEjector(EjectionPolicy(consecutive_failures=2, base_ejection_s=5, max_ejection_s=12),
                        clock=lambda: now[0])
    a, b = EndpointId("a"), EndpointId("b")
    assert not ej.failure(a, "timeout") and ej.failure(a, "timeout")
    assert ej.ejected([a, b]) == {a} and ej.ejected([a]) == set()  # never every candidate
    now[0] = 5.0
    assert not ej.is_ejected(a)
    ej.failure(a, "timeout")
    assert ej.failure(a, "timeout")  # second ejection: 10 s
    now[0] = 14.9
    assert ej.is_ejected(a)
    now[0] = 15.0
    ej.failure(a, "timeout")
    ej.failure(a, "timeout")
    now[0] = 26.9
    assert ej.is_ejected(a)  # capped at 12 s
    now[0] = 27.0
    ej.success(a)
    ej.failure(a, "timeout")
    assert ej.failure(a, "timeout") and ej.ejected_now() == [a]
    now[0] = 32.0
    assert ej.ejected_now() == []  # back to 5 s after the success
