"""A hung engine beside a healthy one, the router in front: the hung one is caught by stall detection (not the
first-byte timeout), takes at most one of ten sequential requests, and comes back only after a probe answers."""

from __future__ import annotations

import json
import os
import signal
import urllib.request

import pytest

from tests.faults.procs import engine, metric, request, router, running, wait_for

pytestmark = pytest.mark.slow  # real processes and sockets

BODY = {"model": "llama-8b-shape", "max_tokens": 8}


def _endpoints(url: str) -> dict[str, dict]:
    with urllib.request.urlopen(url + "/debug/endpoints", timeout=10) as r:
        return {e["id"]: e for e in json.loads(r.read())["endpoints"]}


def _ten_requests(url: str, stream_every: int = 2) -> list[tuple[int, str]]:
    """10 sequential requests with a 30 s client timeout: (status, endpoint that answered) each."""
    out = []
    for i in range(10):
        body = {**BODY, "prompt": f"request {i} " * 6, "stream": i % stream_every == 1}
        status, raw, headers = request(url + "/v1/completions", body, timeout=30)
        if body["stream"]:
            assert raw.rstrip().endswith(b"data: [DONE]"), raw[-200:]
        out.append((status, headers.get("x-llmd-endpoint", "")))
    return out


def _sent_to(router_url: str, endpoint: str) -> int:
    with urllib.request.urlopen(router_url + "/metrics", timeout=10) as r:
        text = r.read().decode()
    return int(metric(text, "llmd_router_decisions_total", endpoint=endpoint))


def test_hung_engine_takes_at_most_one_request_and_stays_out(tmp_path):
    good, hung = engine(tmp_path, "good"), engine(tmp_path, "hung", "--hang-after", "0")
    with running(good, hung):
        r = router(tmp_path, f"{good.url},{hung.url}", "--stall-floor", "1")
        with running(r):
            results = _ten_requests(r.url)
            assert sum(st == 200 for st, _ in results) >= 7, results
            assert all(ep == good.url for st, ep in results if st == 200), results
            assert _sent_to(r.url, hung.url) <= 1, results  # the first one, retried on the good engine
            eps = _endpoints(r.url)
            assert eps[hung.url]["suspect"] and not eps[good.url]["suspect"], eps
            with urllib.request.urlopen(r.url + "/metrics", timeout=10) as resp:
                text = resp.read().decode()
            assert metric(text, "llmd_router_stalls_total", endpoint=hung.url) >= 1
            assert metric(text, "llmd_router_endpoint_suspect", endpoint=hung.url) == 1
            assert metric(text, "llmd_router_upstream_errors_total", endpoint=hung.url, reason="timeout") == 0
            # the hung engine still answers /health and /metrics: only the probes keep it out
            assert request(hung.url + "/health")[0] == 200
            assert not eps[hung.url]["metrics"]["stale"], eps


def test_sigstopped_engine_is_caught_and_returns_after_sigcont(tmp_path):
    good, stopped = engine(tmp_path, "good"), engine(tmp_path, "stopped")
    with running(good, stopped):
        # scrapes slower than the stall floor: the stopped engine still looks fresh when the first request reaches it
        r = router(tmp_path, f"{good.url},{stopped.url}", "--stall-floor", "1", "--scrape-interval", "5")
        with running(r):
            assert wait_for(lambda: all(not e["metrics"]["stale"] for e in _endpoints(r.url).values()), 30)
            os.kill(stopped.pid, signal.SIGSTOP)
            try:
                results = _ten_requests(r.url)
            finally:
                os.kill(stopped.pid, signal.SIGCONT)
            assert sum(st == 200 for st, _ in results) >= 7, results
            assert all(ep == good.url for st, ep in results if st == 200), results
            assert sum(ep == stopped.url for _, ep in results) == 0, results
            assert _sent_to(r.url, stopped.url) <= 1, results
            with urllib.request.urlopen(r.url + "/metrics", timeout=10) as resp:
                assert metric(resp.read().decode(), "llmd_router_stalls_total", endpoint=stopped.url) >= 1
            # back after SIGCONT: a probe answers and the suspect mark goes
            assert wait_for(lambda: not _endpoints(r.url)[stopped.url]["suspect"], 30)
