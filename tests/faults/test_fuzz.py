"""The fault report's fuzz, bounded and seeded: no 5xx, every error OpenAI-shaped JSON, the router stays healthy."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings

from tests.faults.fuzz_bodies import REQUEST
from tests.faults.procs import engine, request, router, running

pytestmark = pytest.mark.slow  # real processes and sockets: the full suite runs them, the fast loop does not


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


# --- issue 14: every route of the router (with governance on) and of the engine ---------------------------------
from hypothesis import strategies as st  # noqa: E402

from llmd_kserve.governance.audit import verify  # noqa: E402
from llmd_kserve.governance.keys import add_key  # noqa: E402
from tests.faults.fuzz_bodies import ANY, BODY, RAW  # noqa: E402

_QUERY = st.dictionaries(st.sampled_from(["limit", "request_id", "x"]), st.text(max_size=6), max_size=2)
_AUTH = st.sampled_from(["good", "good", "good", "good", "none", "junk", "sk-llmd-", "sk-llmd-00000000-", "Basic abc", "Bearer"])
_HEADERS = st.fixed_dictionaries({}, optional={"x-request-id": st.text(max_size=12),
                                               "x-session-id": st.text(max_size=8),
                                               "Content-Type": st.sampled_from(["application/json", "text/yaml",
                                                                                "x/y"])})
ROUTER_CALLS = st.one_of(
    st.tuples(st.just("GET"), st.sampled_from(["/v1/models", "/health", "/metrics", "/debug/decisions",
                                               "/debug/endpoints", "/admin/config", "/nope", "/v1/completions"]),
              _QUERY, st.just(b"")),
    st.tuples(st.just("POST"), st.sampled_from(["/v1/completions", "/v1/chat/completions", "/admin/config",
                                                "/v1/models", "/debug/decisions", "/nope"]),
              st.just({}), BODY | RAW | ANY.map(lambda v: __import__("json").dumps(v).encode())),
    REQUEST.map(lambda pb: ("POST", pb[0], {}, pb[1])),
    REQUEST.map(lambda pb: ("POST", pb[0], {}, pb[1])),
)


@pytest.fixture(scope="module")
def governed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz-gov")
    key, _ = add_key(tmp / "keys.yaml", tenant="fuzz", rpm=100000)
    (tmp / "g.yaml").write_text("guardrails:\n  - type: blocklist\n    keywords: [zz-block]\n  - type: pii-redaction\n")
    eng = engine(tmp, "e0", "--time-scale", "0")
    with running(eng):
        r = router(tmp, eng.url, "--keys-file", str(tmp / "keys.yaml"), "--guardrails-file", str(tmp / "g.yaml"),
                   "--audit-file", str(tmp / "audit.jsonl"), "--flow-per-endpoint", "4", "--admin")
        with running(r):
            yield r, key, tmp / "audit.jsonl"


def _raw_call(url: str, method: str, body: bytes, headers: dict) -> tuple[int, bytes, dict]:
    import urllib.error
    import urllib.request

    req = urllib.request.Request(url, data=body if method == "POST" else None, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, resp.read(), dict(resp.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read(), dict(e.headers)


@settings(max_examples=120, derandomize=True, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(ROUTER_CALLS, _AUTH, _HEADERS)
def test_fuzzed_calls_on_every_router_route_with_governance(governed, call, auth, headers):
    from urllib.parse import urlencode

    r, key, _ = governed
    method, path, query, body = call
    hdrs = {k: v for k, v in headers.items() if v.isascii() and v.isprintable()}
    if auth == "good":
        hdrs["Authorization"] = f"Bearer {key}"
    elif auth != "none":
        hdrs["Authorization"] = auth if " " in auth else f"Bearer {auth}"
    url = r.url + path + ("?" + urlencode(query) if query else "")
    status, raw, resp_headers = _raw_call(url, method, body, hdrs)
    assert status < 500 or (status == 503 and path == "/health"), (method, path, status, raw[:300])
    if status >= 400:
        err = json.loads(raw)["error"]
        assert set(err) == {"message", "type", "param", "code"}
        assert key not in raw.decode(errors="replace")
    if path in ("/v1/completions", "/v1/chat/completions") and method == "POST" and status < 400:
        check_answer(path, status, raw, resp_headers)
    assert_alive(r.url)


def test_fuzzed_router_left_a_valid_audit_chain(governed):
    r, key, audit = governed
    st_, _, _ = request(r.url + "/v1/completions", {"model": "llama-8b-shape", "prompt": "x", "max_tokens": 2},
                        {"Authorization": f"Bearer {key}"})
    assert st_ == 200
    rep = verify([audit])
    assert rep.ok and rep.records >= 2, rep.errors
    assert key not in audit.read_text() and key not in r.output()


ENGINE_CALLS = st.one_of(
    st.tuples(st.just("GET"), st.sampled_from(["/v1/models", "/health", "/ping", "/version", "/metrics", "/nope"]),
              st.just(b"")),
    st.tuples(st.just("POST"), st.sampled_from(["/v1/completions", "/v1/chat/completions", "/v1/completions/render",
                                                "/v1/chat/completions/render", "/tokenize", "/detokenize",
                                                "/reset_prefix_cache", "/_sim/nixl/pull", "/nope"]),
              BODY | RAW | ANY.map(lambda v: __import__("json").dumps(v).encode())),
)


@pytest.fixture(scope="module")
def bare_engine(tmp_path_factory):
    eng = engine(tmp_path_factory.mktemp("fuzz-eng"), "e0", "--time-scale", "0")
    with running(eng):
        yield eng


@settings(max_examples=120, derandomize=True, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(ENGINE_CALLS)
def test_fuzzed_calls_on_every_engine_route(bare_engine, call):
    method, path, body = call
    status, raw, headers = _raw_call(bare_engine.url + path, method, body, {"Content-Type": "application/json"})
    assert status < 500, (method, path, status, raw[:300])
    if status >= 400:
        err = json.loads(raw)["error"]
        assert {"message", "type", "code"} <= set(err)
    status, _, _ = _raw_call(bare_engine.url + "/health", "GET", b"", {})
    assert status == 200
