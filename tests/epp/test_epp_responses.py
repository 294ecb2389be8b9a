"""``/v1/responses`` through the Endpoint Picker (plain protobuf messages, the real scheduler): a continuation is
picked on the endpoint whose answer carried its ``previous_response_id``; a gone endpoint's id is 404."""

from __future__ import annotations

import json

from llmd_kserve.epp.exchange import Exchange
from tests.epp.test_epp_exchange import A, B, pick_of, picker, request, resp_body, resp_headers


def answered(ex: Exchange, target: str, payload: bytes, ctype: str = "application/json") -> None:
    """The engine's answer to the exchange's request (``target``: host:port, as picked)."""
    ex.handle(resp_headers(ctype=ctype, served=target))
    ex.handle(resp_body(payload, True))


def test_a_continuation_is_picked_where_its_previous_response_was_stored() -> None:
    p = picker("round-robin")
    ex = Exchange(p)
    first = pick_of(request(ex, b'{"model": "m", "input": "hi"}', path="/v1/responses"))[0]
    answered(ex, first, b'{"id": "resp_1", "object": "response", "output": []}')
    sse = b'event: response.created\ndata: {"type":"response.created","response":{"id":"resp_2"}}\n\n'
    for _ in range(4):  # round-robin alone would alternate: the pin holds it
        ex = Exchange(p)
        body = json.dumps({"model": "m", "input": "more", "previous_response_id": "resp_1"}).encode()
        assert pick_of(request(ex, body, path="/v1/responses"))[0] == first
    answered(ex, first, sse, "text/event-stream")  # a stream's id comes from its response.created event
    assert p.response_homes.get("resp_2") == f"http://{first}"


def test_a_continuation_of_a_response_on_a_removed_endpoint_is_404_and_a_bad_id_400() -> None:
    p = picker("round-robin")
    ex = Exchange(p)
    first = pick_of(request(ex, b'{"model": "m", "input": "hi"}', path="/v1/responses"))[0]
    answered(ex, first, b'{"id": "resp_x", "object": "response"}')
    p.director.rt.set_endpoints([B if first in A else A])
    body = b'{"model": "m", "input": "again", "previous_response_id": "resp_x"}'
    imm = request(Exchange(p), body, path="/v1/responses")[0].immediate_response
    assert imm.status.code == 404 and json.loads(imm.body)["error"]["param"] == "previous_response_id"
    bad = b'{"model": "m", "input": "x", "previous_response_id": ["resp_x"]}'
    imm = request(Exchange(p), bad, path="/v1/responses")[0].immediate_response
    assert imm.status.code == 400 and json.loads(imm.body)["error"]["param"] == "previous_response_id"
