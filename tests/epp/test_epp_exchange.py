"""The ext_proc exchange and the picker with plain protobuf messages (no gRPC, no Envoy): the real scheduler."""

from __future__ import annotations

import json

import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from google.protobuf import struct_pb2

from llmd_kserve.control.director import Director
from llmd_kserve.control.endpoints import parse_endpoints
from llmd_kserve.control.settings import RouterSettings
from llmd_kserve.epp import protocol
from llmd_kserve.epp.exchange import Exchange, usage_from_body
from llmd_kserve.epp.picker import EndpointPicker, Saturation
from llmd_kserve.epp.run import expand_target_ports
from llmd_kserve.epp.server import epp_runtime
from llmd_kserve.errors import ConfigError
from llmd_kserve.types import EndpointMetrics, EndpointState

A, B = "http://10.0.0.1:8000", "http://10.0.0.2:8000"
FRESH = EndpointMetrics(stale=False)


def picker(config: str = "round-robin", endpoints=(A, B), metrics=FRESH) -> EndpointPicker:
    state = epp_runtime(RouterSettings(config=config), endpoints)
    return EndpointPicker(Director(state), endpoint_states=lambda: [EndpointState(e, metrics)
                                                                     for e in state.pool.snapshot])


def headers(path="/v1/completions", eos=False, subset=None, **extra) -> pb.ProcessingRequest:
    hs = base_pb2.HeaderMap(headers=[base_pb2.HeaderValue(key=k, raw_value=v.encode())
                                     for k, v in {":path": path, ":method": "POST", **extra}.items()])
    req = pb.ProcessingRequest(request_headers=pb.HttpHeaders(headers=hs, end_of_stream=eos))
    if subset is not None:
        s = struct_pb2.Struct()
        s.update({protocol.SUBSET_KEY: subset})
        req.metadata_context.filter_metadata[protocol.SUBSET_NAMESPACE].CopyFrom(s)
    return req


def body(data: bytes, eos: bool) -> pb.ProcessingRequest:
    return pb.ProcessingRequest(request_body=pb.HttpBody(body=data, end_of_stream=eos))


def resp_headers(status=200, ctype="text/event-stream", served=None) -> pb.ProcessingRequest:
    hs = base_pb2.HeaderMap(headers=[base_pb2.HeaderValue(key=":status", raw_value=str(status).encode()),
                                     base_pb2.HeaderValue(key="content-type", raw_value=ctype.encode())])
    req = pb.ProcessingRequest(response_headers=pb.HttpHeaders(headers=hs))
    if served is not None:
        s = struct_pb2.Struct()
        s.update({protocol.SERVED_KEY: served})
        req.metadata_context.filter_metadata[protocol.DESTINATION_NAMESPACE].CopyFrom(s)
    return req


def resp_body(data: bytes, eos: bool) -> pb.ProcessingRequest:
    return pb.ProcessingRequest(response_body=pb.HttpBody(body=data, end_of_stream=eos))


def pick_of(out: list[pb.ProcessingResponse]) -> tuple[str, str]:
    common = out[0].request_headers.response
    header = {h.header.key: h.header.raw_value.decode() for h in common.header_mutation.set_headers}
    meta = out[0].dynamic_metadata.fields[protocol.DESTINATION_NAMESPACE].struct_value.fields
    assert common.clear_route_cache
    return header[protocol.DESTINATION_HEADER], meta[protocol.DESTINATION_HEADER].string_value


def request(ex: Exchange, payload: bytes, split: int = 3, **hkw) -> list[pb.ProcessingResponse]:
    assert ex.handle(headers(**hkw)) == []
    step = max(1, len(payload) // split)
    out: list[pb.ProcessingResponse] = []
    for i in range(0, len(payload), step):
        out += ex.handle(body(payload[i:i + step], i + step >= len(payload)))
    return out


BIG = json.dumps({"model": "m", "prompt": "x " * 100_000, "max_tokens": 4}).encode()


def test_pick_is_sent_once_the_body_ends_then_the_body_in_bounded_chunks():
    ex = Exchange(picker())
    out = request(ex, BIG, split=7)
    header, meta = pick_of(out)
    assert header == meta == "10.0.0.1:8000"
    chunks = [m.request_body.response.body_mutation.streamed_response for m in out[1:]]
    sent = b"".join(c.body for c in chunks)
    assert json.loads(sent) == json.loads(BIG)  # the EPP's own encoding of the same body
    set_headers = {h.header.key: h.header.raw_value for h in out[0].request_headers.response.header_mutation.set_headers}
    assert set_headers["content-length"] == str(len(sent)).encode()
    assert all(len(c.body) <= protocol.BODY_CHUNK_LIMIT for c in chunks)
    assert [c.end_of_stream for c in chunks] == [False] * (len(chunks) - 1) + [True]


def test_bodyless_request_is_picked_at_headers():
    ex = Exchange(picker())
    out = ex.handle(headers(path="/v1/models", eos=True))
    assert len(out) == 1 and pick_of(out)[0] in ("10.0.0.1:8000", "10.0.0.2:8000")


@pytest.mark.parametrize("subset, expect", [
    (["10.0.0.2:8000"], "10.0.0.2:8000"),
    ("10.0.0.9:1, 10.0.0.2:8000", "10.0.0.2:8000"),
    (["10.0.0.2"], "10.0.0.2:8000"),
])
def test_subset_hint_list_string_and_bare_ip(subset, expect):
    for _ in range(3):
        out = request(Exchange(picker()), b'{"prompt": "hi"}', subset=subset)
        assert pick_of(out)[0] == expect


@pytest.mark.parametrize("subset, reason", [([], "subset_empty"), (" , ", "subset_empty"),
                                            (["10.9.9.9:1"], "subset_ineligible")])
def test_empty_or_ineligible_subset_is_503(subset, reason):
    out = request(Exchange(picker()), b'{"prompt": "hi"}', subset=subset)
    imm = out[0].immediate_response
    assert imm.status.code == 503 and imm.details == reason


def test_bad_body_is_400_and_too_large_is_413():
    imm = request(Exchange(picker()), b'{"prompt": ')[0].immediate_response
    assert imm.status.code == 400 and json.loads(imm.body)["error"]["code"] == 400
    ex = Exchange(picker(), max_body_bytes=1000)
    out = request(ex, BIG, split=50)
    assert len(out) == 1 and out[0].immediate_response.status.code == 413


def test_sheddable_request_is_429_only_when_saturated():
    busy = EndpointMetrics(stale=False, waiting=9)
    p = picker(metrics=busy)
    assert p.pick({":path": "/v1/completions", "x-llmd-priority": "-1"}, b'{"prompt":"a"}', None).status == 429
    assert p.pick({":path": "/v1/completions"}, b'{"prompt":"a"}', None).target == A
    calm = picker(metrics=EndpointMetrics(stale=False, waiting=1))
    assert calm.pick({":path": "/v1/completions", "x-llmd-priority": "-1"}, b'{"prompt":"a"}', None).target
    with pytest.raises(ConfigError):
        Saturation(kv_threshold=0)


def test_full_response_is_echoed_and_usage_read_from_the_sse_tail():
    p = picker()
    ex = Exchange(p)
    request(ex, b'{"prompt": "hi"}')
    out = ex.handle(resp_headers())
    hdrs = {h.header.key: h.header.raw_value.decode() for h in out[0].response_headers.response.header_mutation.set_headers}
    assert hdrs[protocol.ENDPOINT_HEADER] == A
    sse = b'data: {"choices":[{"text":"a"}]}\n\ndata: {"choices":[],"usage":{"prompt_tokens":5,' \
          b'"completion_tokens":1,"prompt_tokens_details":{"cached_tokens":3}}}\n\ndata: [DONE]\n\n'
    echoed = ex.handle(resp_body(sse[:40], False)) + ex.handle(resp_body(sse[40:], True))
    assert b"".join(m.response_body.response.body_mutation.streamed_response.body for m in echoed) == sse
    d = p.director.rt.decisions.recent()[-1]
    assert d["outcome"] == "ok" and d["reported_cached_tokens"] == 3 and d["status"] == 200
    assert ex.pick is not None and ex.pick.done


def test_stream_closed_mid_response_releases_as_failed_and_headers_mode_as_ok():
    p = picker()
    ex = Exchange(p)
    request(ex, b'{"prompt": "hi"}')
    ex.handle(resp_headers())
    ex.close(cancelled=True)
    assert p.director.rt.decisions.recent()[-1]["outcome"] == "client_disconnected"
    ex2 = Exchange(p, response_mode="headers")
    request(ex2, b'{"prompt": "hi"}')
    ex2.handle(resp_headers())
    ex2.close(cancelled=True)  # Envoy ends the stream when the HTTP exchange is over
    assert p.director.rt.decisions.recent()[-1]["outcome"] == "ok"


def test_headers_mode_without_response_headers_completes_ok_when_the_stream_ends():
    p = picker()
    ex = Exchange(p, response_mode="headers")
    out = request(ex, b'{"prompt": "hi"}')
    meta = out[0].dynamic_metadata.fields[protocol.DESTINATION_NAMESPACE].struct_value.fields
    assert meta[protocol.ENDPOINT_HEADER].string_value == A  # Envoy's route copies it into the response
    assert ex.pick is not None and not ex.pick.done
    ex.close()  # Envoy ends the stream when the HTTP exchange is over; no response message came before
    d = p.director.rt.decisions.recent()[-1]
    assert ex.pick.done and d["outcome"] == "ok" and d["status"] is None
    full = Exchange(p)
    request(full, b'{"prompt": "hi"}')
    full.close()  # in full mode a stream that ends before any response is a failure
    assert p.director.rt.decisions.recent()[-1]["outcome"] == "aborted"


def test_response_status_reads_only_status_and_content_type():
    msg = resp_headers(503, "Text/Event-Stream; charset=utf-8").response_headers
    assert protocol.response_status(msg) == (503, "text/event-stream; charset=utf-8")
    bad = pb.HttpHeaders(headers=base_pb2.HeaderMap(headers=[base_pb2.HeaderValue(key=":status", value="2x")]))
    assert protocol.response_status(bad) == (0, "")
    assert protocol.served_endpoint(resp_headers(served="10.0.0.9:8000")) == "10.0.0.9:8000"
    assert protocol.served_endpoint(resp_headers()) is None


def test_pd_pick_names_the_prefill_endpoint_and_releases_it_at_response_headers():
    eps = ["http://10.0.0.1:8000#role=prefill", "http://10.0.0.2:8000#role=decode"]
    p = picker("pd-always", eps)
    released = []
    p.director.rt.scheduler.current.on_prefill_complete = lambda req, res, outcome: released.append(outcome.ok)  # type: ignore[method-assign]
    ex = Exchange(p)
    out = request(ex, json.dumps({"prompt": "hello " * 200}).encode())
    common = out[0].request_headers.response
    set_h = {h.header.key: h.header.raw_value.decode() for h in common.header_mutation.set_headers}
    assert set_h[protocol.DESTINATION_HEADER] == "10.0.0.2:8000"
    assert set_h[protocol.PREFILL_HEADER] == "10.0.0.1:8000"
    ex.handle(resp_headers())
    assert released == [True]
    plain = request(Exchange(picker()), b'{"prompt": "hi"}')
    assert protocol.PREFILL_HEADER in plain[0].request_headers.response.header_mutation.remove_headers


def test_usage_parsing_and_target_port_expansion():
    assert usage_from_body(b'{"usage":{"prompt_tokens":4,"completion_tokens":1}}', False).prompt_tokens == 4
    assert usage_from_body(b"data: [DONE]\n\n", True) is None
    eps = expand_target_ports(parse_endpoints(["http://10.0.0.1:8000#kv=tcp://10.0.0.1:5557"]), [8000, 8001])
    assert [(e.id, e.kv_events) for e in eps] == [("http://10.0.0.1:8000", "tcp://10.0.0.1:5557"),
                                                   ("http://10.0.0.1:8001", "tcp://10.0.0.1:5558")]


def test_served_endpoint_metadata_attributes_the_response():
    p = picker()
    ex = Exchange(p)
    request(ex, b'{"prompt": "hi"}')  # picks A
    ex.handle(resp_headers(ctype="application/json", served="10.0.0.2:8000"))
    ex.handle(resp_body(b'{"usage":{"prompt_tokens":7,"completion_tokens":1}}', True))
    assert ex.served == "10.0.0.2:8000"
    assert p.metrics.served_elsewhere._value.get() == 1
    text = p.metrics.render()[0].decode()
    assert 'llmd_epp_prompt_tokens_total{endpoint="http://10.0.0.2:8000"} 7.0' in text
