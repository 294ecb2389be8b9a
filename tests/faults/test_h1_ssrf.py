"""H1: a client cannot make an engine contact an address of its choosing through ``kv_transfer_params``, however
the key is spelled in JSON (the report's repro: ``"kv_transfer_param\\u0073"``), aggregated and on P/D fallback."""

from __future__ import annotations

import json
import time

import pytest

from llmd_kserve.stack.procs import free_port as _free_port
from tests.faults.procs import Listener, engine, metric, request, router, running

pytestmark = pytest.mark.slow  # real processes and sockets: the full suite runs them, the fast loop does not


def _kv(port: int) -> str:
    return json.dumps({"do_remote_prefill": True, "remote_host": "127.0.0.1", "remote_port": port,
                       "remote_request_id": "x", "remote_engine_id": "x", "remote_block_ids": [1]})


def _bodies(port: int) -> list[tuple[str, bytes]]:
    kv = _kv(port)
    out = []
    for key in ('"kv_transfer_params"', '"kv_transfer_param\\u0073"', '"\\u006bv_transfer_params"'):
        field = f"{key}:{kv}"
        out.append(("/v1/completions", ('{"prompt":"hi","max_tokens":2,' + field + "}").encode()))
        out.append(("/v1/completions", ('{"prompt":"hi","max_tokens":2,"stream":true,'
                                        '"stream_options":{"include_usage":true},' + field + "}").encode()))
        out.append(("/v1/chat/completions", ('{"messages":[{"role":"user","content":"hi"}],"max_tokens":2,'
                                             + field + "}").encode()))
    return out


@pytest.fixture
def listener():
    lst = Listener()
    yield lst
    lst.close()


def test_escaped_kv_transfer_params_never_reach_the_engine(tmp_path, listener):
    eng = engine(tmp_path, "e0")
    with running(eng):
        r = router(tmp_path, eng.url)
        with running(r):
            for path, body in _bodies(listener.port):
                status, _, _ = request(r.url + path, body)
                assert status == 200, (path, body)
            time.sleep(0.3)  # a pull the engine started would have landed by now (it runs before the first token)
            assert listener.hits == []
            _, text, _ = request(r.url + "/metrics")
            assert metric(text.decode(), "llmd_router_pd_client_params_stripped_total") == 9


def test_pd_fallback_strips_escaped_key_too(tmp_path, listener):
    dead_prefill = f"http://127.0.0.1:{_free_port()}#role=prefill"  # the report killed it: connect fails
    dec = engine(tmp_path, "decode", "--role", "decode")
    with running(dec):
        r = router(tmp_path, f"{dead_prefill},{dec.url}#role=decode", "--config", "pd-always")
        with running(r):
            for path, body in _bodies(listener.port):
                status, _, _ = request(r.url + path, body)
                assert status == 200, (path, body)
            time.sleep(0.3)
            assert listener.hits == []
            _, text, _ = request(r.url + "/metrics")
            assert metric(text.decode(), "llmd_router_pd_fallbacks_total", reason="connect") >= 1
