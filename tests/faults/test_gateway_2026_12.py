"""The gateway path (a real Envoy + the EPP) is no weaker than the router path: a client's ``kv_transfer_params``
never reach an engine (EPP up, and fail-open with the EPP down), only the OpenAI routes reach the engines (however
the path is spelled), the router's limits apply, HTTP/1.0 gets an answer, a client-sent pick header does not break
fail-open, and ``up --gateway envoy --fail-open`` keeps serving when the EPP dies."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
from pathlib import Path

import httpx
import pytest

from llmd_kserve.control.director import Director
from llmd_kserve.control.runtime import Runtime
from llmd_kserve.control.settings import RouterSettings
from llmd_kserve.epp.picker import EndpointPicker
from llmd_kserve.kube.gateway import http_route
from llmd_kserve.kube.spec import DeploymentSpec
from llmd_kserve.types import Endpoint, EndpointId, EndpointMetrics, EndpointState
from tests.epp.gateway import Gateway, gateway, require_envoy
from tests.epp.upstream import running_upstream
from tests.faults.procs import Listener, cli, engine, metric, wait_for
from tests.faults.test_h1_ssrf import _bodies

pytestmark = pytest.mark.slow  # real processes and sockets: the full suite runs them, the fast loop does not

COMPLETION = {"prompt": "hi", "max_tokens": 2}
OPENAI_PATHS = {"/v1/completions", "/v1/chat/completions", "/v1/responses", "/v1/models", "/health"}


def _hp(url: str) -> str:
    return url.split("//", 1)[1]


@pytest.fixture(scope="module")
def eng(tmp_path_factory):
    require_envoy()
    proc = engine(tmp_path_factory.mktemp("gateway"), "e0")
    yield proc
    proc.stop()


@pytest.fixture
def listener():
    lst = Listener()
    yield lst
    lst.close()


async def _send_all(gw: Gateway, bodies: list[tuple[str, bytes]]) -> list[tuple[int, bytes]]:
    async with httpx.AsyncClient(base_url=gw.url, timeout=30) as c:
        out = []
        for path, body in bodies:
            r = await c.post(path, content=body, headers={"content-type": "application/json"})
            out.append((r.status_code, r.content))
        return out


async def _raw(url: str, request: bytes) -> bytes:
    """Send bytes as they are (no client-side path cleaning); the answer's head and body (``content-length`` bytes,
    else up to the close)."""
    host, port = _hp(url).split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(request)
    await writer.drain()
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
        length = [ln.split(b":", 1)[1] for ln in head.lower().split(b"\r\n") if ln.startswith(b"content-length:")]
        body = await asyncio.wait_for(reader.readexactly(int(length[0])) if length else reader.read(), 30)
        return head + body
    finally:
        writer.close()


# --- H1: kv_transfer_params ---------------------------------------------------------------------------------------
async def test_client_kv_transfer_params_never_reach_the_engine_through_the_epp(tmp_path, eng, listener):
    async with gateway(tmp_path, [eng.url]) as gw:
        bodies = _bodies(listener.port)
        answers = await _send_all(gw, bodies)
        assert [s for s, _ in answers] == [200] * 9, answers
        streams = [answer for (_, sent), (_, answer) in zip(bodies, answers, strict=True) if b'"stream":true' in sent]
        assert len(streams) == 3 and all(b"data: [DONE]" in a for a in streams)  # streams complete
        await asyncio.sleep(0.3)  # a pull the engine started would have landed by now (it runs before the first token)
        assert listener.hits == []
        async with httpx.AsyncClient() as c:
            text = (await c.get(gw.epp.metrics_url + "/metrics")).text
        assert metric(text, "llmd_epp_client_params_stripped_total") == 9


async def test_fail_open_fallback_drops_client_kv_transfer_params_too(tmp_path, eng, listener):
    async with gateway(tmp_path, [eng.url], failure_mode_allow=True, fallback=(_hp(eng.url),)) as gw:
        await gw.epp.server.stop(0)
        await gw.wait_epp_down()
        answers = await _send_all(gw, _bodies(listener.port))
        assert [s for s, _ in answers] == [200] * 9, answers
        await asyncio.sleep(0.3)
        assert listener.hits == []
        # a body the fallback's filter cannot read as a UTF-8 JSON object is refused, not forwarded unread
        bad = [("/v1/completions", b"\xef\xbb\xbf" + json.dumps(COMPLETION).encode()),
               ("/v1/completions", json.dumps(COMPLETION).encode("utf-16"))]
        assert [s for s, _ in await _send_all(gw, bad)] == [400, 400]


# --- M13: only the OpenAI routes, however spelled ------------------------------------------------------------------
NOT_ROUTES = [("POST", "/reset_prefix_cache"), ("GET", "/metrics"), ("POST", "/v1/completions/render"),
              ("POST", "/_sim/nixl/pull"), ("POST", "/v1/completions/../../reset_prefix_cache"),
              ("POST", "/v1/%2e%2e/%72eset_prefix_cache"), ("POST", "/v1/completions/"),
              ("GET", "/v1/models/../../metrics")]
"""Engine routes, as spelled by the report and in other ways: 404 from the gateway."""
SPELLINGS = ["/v1/%63ompletions", "//v1//completions", "/v1/./completions", "/v1/x/../completions",
             "/v1/completions?x=1"]
"""Other spellings of ``/v1/completions``: served as that path, scheduled by the EPP like it."""


async def _post_raw(url: str, method: str, path: str, body: bytes) -> tuple[int, bytes]:
    raw = await _raw(url, f"{method} {path} HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
                          f"content-length: {len(body)}\r\nconnection: close\r\n\r\n".encode() + body)
    head, _, answer = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), answer


@pytest.mark.parametrize("fail_open", [False, True])
async def test_engine_routes_are_not_reachable_through_the_gateway(tmp_path, eng, fail_open):
    fallback = {"failure_mode_allow": True, "fallback": (_hp(eng.url),)} if fail_open else {}
    async with gateway(tmp_path, [eng.url], **fallback) as gw:
        metrics_url = gw.epp.metrics_url + "/metrics"
        if fail_open:
            await gw.epp.server.stop(0)
            await gw.wait_epp_down()
        body = json.dumps(COMPLETION).encode()
        for method, path in NOT_ROUTES:
            status, answer = await _post_raw(gw.url, method, path, body)
            assert status == 404, (path, status, answer[:300])
            assert json.loads(answer)["error"]["type"] == "NotFoundError", (path, answer)
        async with httpx.AsyncClient(base_url=gw.url, timeout=30) as c:
            for path in ("/v1%2Fcompletions", "/v1%5Ccompletions"):  # an escaped slash is refused outright
                r = await c.post(path, content=body)
                assert r.status_code == 400 and r.json()["error"]["type"] == "BadRequestError", (path, r.text)
        for path in SPELLINGS:
            status, answer = await _post_raw(gw.url, "POST", path, body)
            assert status == 200, (path, status, answer[:300])
        if not fail_open:  # each went through the EPP's validation and scheduling
            async with httpx.AsyncClient() as c:
                text = (await c.get(metrics_url)).text
            assert metric(text, "llmd_epp_decisions_total") == len(SPELLINGS)
            assert (await _post_raw(gw.url, "POST", "/v1/%63ompletions", b'{"prompt":'))[0] == 400  # the EPP's check
        async with httpx.AsyncClient(base_url=gw.url, timeout=30) as c:  # the other routes
            assert (await c.get("/v1/models")).status_code == 200
            assert (await c.get("/health")).status_code == 200


def test_epp_answers_404_outside_the_openai_routes():
    """Behind a gateway that sends every path to the EPP, the EPP itself refuses what is not an OpenAI route."""
    ep = Endpoint(EndpointId("http://10.0.0.1:8000"))
    picker = EndpointPicker(Director(Runtime.build(RouterSettings(config="round-robin"), [ep])),
                            endpoint_states=lambda: [EndpointState(ep, EndpointMetrics(stale=False))])
    body = json.dumps(COMPLETION).encode()
    for path in ("/reset_prefix_cache", "/metrics", "/v1/completions/render", "/_sim/nixl/pull", "/v1/%63ompletions"):
        out = picker.pick({":path": path, ":method": "POST"}, body, None)
        assert getattr(out, "status", None) == 404, (path, out)
        assert json.loads(out.body())["error"]["type"] == "NotFoundError"
    assert getattr(picker.pick({":path": "/v1/completions?x=1", ":method": "POST"}, body, None), "target", None)


def test_http_route_matches_the_openai_paths_exactly():
    matches = http_route(DeploymentSpec())["spec"]["rules"][0]["matches"]
    assert {(m["path"]["type"], m["path"]["value"]) for m in matches} == {("Exact", p) for p in OPENAI_PATHS}


# --- L5: the router's limits on the EPP path -----------------------------------------------------------------------
async def test_router_limits_apply_on_the_epp_path(tmp_path):
    require_envoy()
    async with running_upstream() as up, gateway(tmp_path, [up.url], router={"max_prompt_chars": 50_000}) as gw:
        async with httpx.AsyncClient(base_url=gw.url, timeout=60) as c:
            batch = await c.post("/v1/completions", json={"prompt": ["hi"] * 5_000, "max_tokens": 1})
            ids = await c.post("/v1/completions", json={"prompt": [7] * 131_073, "max_tokens": 1})  # a big body:
            # admitted off the event loop
            chars = await c.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "x" * 50_001}]})
            ok = await c.post("/v1/completions", json={"prompt": ["hi"] * 256, "max_tokens": 1})
        for r, param in ((batch, "prompt"), (ids, "prompt"), (chars, "messages")):
            assert r.status_code == 413, (r.status_code, r.text[:300])
            assert r.json()["error"]["type"] == "RequestTooLargeError" and r.json()["error"]["param"] == param
        assert ok.status_code == 200
        assert len(up.seen) == 1  # only the request within the limits reached an upstream


# --- L6: HTTP/1.0, and a client-sent pick header under fail-open ---------------------------------------------------
async def test_http_10_gets_an_answer(tmp_path, eng):
    async with gateway(tmp_path, [eng.url]) as gw:
        body = json.dumps(COMPLETION).encode()
        for host in ("Host: x\r\n", ""):  # with and without a Host header
            raw = await _raw(gw.url, f"POST /v1/completions HTTP/1.0\r\n{host}content-type: application/json\r\n"
                                     f"content-length: {len(body)}\r\n\r\n".encode() + body)
            head, _, answer = raw.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.") and head.split(b" ")[1] == b"200", raw[:300]
            assert json.loads(answer)["choices"]


async def test_fail_open_ignores_a_client_sent_destination_header(tmp_path, eng):
    async with gateway(tmp_path, [eng.url], failure_mode_allow=True, fallback=(_hp(eng.url),)) as gw:
        await gw.epp.server.stop(0)
        await gw.wait_epp_down()
        async with httpx.AsyncClient(base_url=gw.url, timeout=30) as c:
            for value in ("127.0.0.1:1", _hp(eng.url)):
                r = await c.post("/v1/completions", json=COMPLETION, headers={"x-gateway-destination-endpoint": value})
                assert r.status_code == 200, (value, r.status_code, r.text)


# --- L4: up --gateway envoy --fail-open survives an EPP crash ------------------------------------------------------
def _epp_pid(state: dict) -> int | None:
    for pid in state["pids"][1:]:
        try:
            if b"\0epp\0" in Path(f"/proc/{pid}/cmdline").read_bytes():
                return int(pid)
        except OSError:  # gone
            continue
    return None


def test_up_keeps_serving_when_the_epp_dies(tmp_path):
    require_envoy()
    state_file = tmp_path / "state.json"
    log = open(tmp_path / "up.log", "wb")  # noqa: SIM115 - closed below
    up = subprocess.Popen(cli("up", "--gateway", "envoy", "--fail-open", "--engines", "1", "--no-prometheus",
                              "--time-scale", "0.05", "--state-file", str(state_file)),
                          stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    try:
        assert wait_for(state_file.exists, 90), (tmp_path / "up.log").read_text()
        state = json.loads(state_file.read_text())
        url, first = state["router_url"], _epp_pid(state)
        assert first is not None, state
        with httpx.Client(base_url=url, timeout=30) as c:
            assert c.post("/v1/completions", json=COMPLETION).status_code == 200
            os.kill(first, signal.SIGKILL)
            statuses: list[int] = []

            def restarted_and_serving() -> bool:
                try:
                    statuses.append(c.post("/v1/completions", json=COMPLETION).status_code)
                except httpx.TransportError:
                    statuses.append(0)
                return statuses[-5:] == [200] * 5 and _epp_pid(json.loads(state_file.read_text())) not in (None, first)

            assert wait_for(restarted_and_serving, 60), (statuses, (tmp_path / "up.log").read_text())
            assert up.poll() is None, (tmp_path / "up.log").read_text()
            assert set(statuses) <= {200, 500}, statuses  # 500: a request that raced the EPP's death (documented)
    finally:
        up.send_signal(signal.SIGTERM)
        try:
            up.wait(30)
        except subprocess.TimeoutExpired:
            up.kill()
            up.wait()
        log.close()
