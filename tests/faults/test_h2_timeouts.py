"""H2: a hung engine no longer swallows requests: first-byte timeout + retry elsewhere, between-chunk timeout ends
the client's stream with an OpenAI-shaped SSE error event, and the endpoint is ejected, then brought back."""

from __future__ import annotations

import json
import os
import signal
import urllib.request

import pytest

from tests.faults.procs import engine, fake, metric, request, router, running, wait_for

pytestmark = pytest.mark.slow  # real processes and sockets: the full suite runs them, the fast loop does not


def test_generation_hang_is_timed_out_retried_and_ejected(tmp_path):
    hang, good = fake(tmp_path, "gen-hang"), engine(tmp_path, "e0")
    with running(hang, good):
        r = router(tmp_path, f"{good.url},{hang.url}", "--first-byte-timeout", "1", "--eject-s", "60",
                   "--config", "round-robin")
        with running(r):
            codes = [request(r.url + "/v1/completions", {"prompt": f"q{i}", "max_tokens": 2}, timeout=30)[0]
                     for i in range(10)]
            assert codes == [200] * 10
            text = request(r.url + "/metrics")[1].decode()
            assert metric(text, "llmd_router_endpoint_ejected", endpoint=hang.url) == 1
            assert metric(text, "llmd_router_upstream_errors_total", endpoint=hang.url, reason="timeout") == 1
            assert metric(text, "llmd_router_retries_total") == 1  # ejected after its one timeout
            assert "ejecting endpoint " + hang.url in r.output()


def _events(resp) -> list[bytes]:
    return [line[6:].strip() for line in resp if line.startswith(b"data: ")]


def test_stopped_engine_ends_stream_with_error_event_and_comes_back(tmp_path):
    eng = engine(tmp_path, "e0")
    eng_pid = eng.pid
    with running(eng):
        r = router(tmp_path, eng.url, "--idle-timeout", "1", "--eject-s", "1")
        with running(r):
            body = json.dumps({"prompt": "tell me", "max_tokens": 4000, "ignore_eos": True, "stream": True}).encode()
            # the engine runs at time-scale 0.05; slow it down by stopping it right after the first event
            req = urllib.request.Request(r.url + "/v1/completions", data=body,
                                         headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=30) as resp:
                first = resp.readline()
                assert first.startswith(b"data: {")
                os.kill(eng_pid, signal.SIGSTOP)
                try:
                    events = _events(resp)  # returns at EOF: the router ended the stream
                    ejected = metric(request(r.url + "/metrics")[1].decode(), "llmd_router_endpoint_ejected",
                                     endpoint=eng.url)
                finally:
                    os.kill(eng_pid, signal.SIGCONT)
            err = json.loads(events[-1])["error"]
            assert err["code"] == 504 and err["type"] == "GatewayTimeoutError" and "nothing for 1 s" in err["message"]
            assert b"[DONE]" not in events
            assert ejected == 1
            text = request(r.url + "/metrics")[1].decode()
            assert metric(text, "llmd_router_requests_total", route="/v1/completions", status="504") == 1
            # back: scrapes fresh again, ejection over, requests served
            assert wait_for(lambda: request(r.url + "/v1/completions", {"prompt": "x", "max_tokens": 2})[0] == 200)
            assert wait_for(lambda: metric(request(r.url + "/metrics")[1].decode(), "llmd_router_endpoint_ejected",
                                           endpoint=eng.url) == 0)
