"""Stall detection in the Endpoint Picker: in ``full`` response mode a pick whose response headers never come makes
its endpoint suspect and later picks avoid it; answered picks do not; ``headers`` mode (no response seen) only
skips suspects."""

from __future__ import annotations

import asyncio

from llmd_kserve.control.director import Director
from llmd_kserve.control.settings import RouterSettings
from llmd_kserve.epp.exchange import Exchange, ResponseMode
from llmd_kserve.epp.picker import EndpointPicker
from llmd_kserve.epp.server import epp_runtime
from llmd_kserve.types import EndpointState
from tests.epp.test_epp_exchange import FRESH, A, B, pick_of, request, resp_body, resp_headers

SETTINGS = {"config": "round-robin", "stall_factor": 1.0, "stall_floor_s": 0.2}
BODY = b'{"model": "m", "prompt": "hi", "max_tokens": 4}'


def _picker(mode: ResponseMode) -> EndpointPicker:
    state = epp_runtime(RouterSettings(**SETTINGS), (A, B), response_mode=mode)
    return EndpointPicker(Director(state), endpoint_states=lambda: [EndpointState(e, FRESH)
                                                                     for e in state.pool.snapshot])


async def test_a_pick_without_response_headers_makes_its_endpoint_suspect_and_new_picks_avoid_it() -> None:
    p = _picker("full")
    stalls = p.director.rt.stalls
    answered = Exchange(p)
    assert pick_of(request(answered, BODY))[0] == "10.0.0.1:8000"
    answered.handle(resp_headers(ctype="application/json"))
    answered.handle(resp_body(b'{"choices": []}', True))
    silent = Exchange(p)
    assert pick_of(request(silent, BODY))[0] == "10.0.0.2:8000"  # round-robin: B, which never answers
    for _ in range(200):
        if B in stalls.suspect:
            break
        await asyncio.sleep(0.01)
    assert list(stalls.suspect) == [B] and stalls.stalls == {B: 1}
    for _ in range(4):
        ex = Exchange(p)
        assert pick_of(request(ex, BODY))[0] == "10.0.0.1:8000"
        ex.handle(resp_headers(ctype="application/json"))
        ex.handle(resp_body(b'{"choices": []}', True))
    silent.close()
    assert A not in stalls.suspect


def test_headers_mode_does_not_watch_picks() -> None:
    assert not _picker("headers").director.rt.stalls.watches_attempts
    assert _picker("full").director.rt.stalls.watches_attempts
