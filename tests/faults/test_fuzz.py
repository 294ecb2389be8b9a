"""The fault report's fuzz, bounded and seeded: no 5xx, every error OpenAI-shaped JSON, the router stays healthy."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings

from tests.faults.fuzz_bodies import REQUEST
from tests.faults.procs import engine, request, router, running


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz")
    eng = engine(tmp, "e0", "--time-scale", "0")
    with running(eng):
        r = router(tmp, eng.url, "--max-prompt-chars", "10000")
        with running(r):
            yield r


def check_answer(path: str, status: int, body: bytes, headers: dict) -> None:
    assert status < 500, (path, status, body[:300])
    if status >= 400:
        err = json.loads(body)["error"]
        assert set(err) == {"message", "type", "param", "code"} and err["code"] == status
    elif headers.get("Content-Type", "").startswith("text/event-stream"):
        assert b'"error"' not in body and body.rstrip().endswith(b"data: [DONE]")
    else:
        assert "choices" in json.loads(body)


def assert_alive(url: str) -> None:
    """The router still answers /health (503 is an answer too: on a loaded machine a scrape can go stale)."""
    status, body, _ = request(url + "/health")
    assert status in (200, 503) and "status" in json.loads(body)


@settings(max_examples=150, derandomize=True, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(REQUEST)
def test_fuzzed_requests_get_4xx_json_or_200(stack, req):
    path, body = req
    check_answer(path, *request(stack.url + path, body, timeout=60))
    assert_alive(stack.url)
