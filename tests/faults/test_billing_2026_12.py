"""Billing and metering identity (``shared/FAULTS-2026-12.md`` H2, M1, M2, M3, L6): every request is metered on its
own (a client's ``x-request-id`` is only a label), on every ending (a cut stream is billed what the engine streamed),
whatever ``stream_options`` the client sends, and within the key's budget even when requests run in parallel."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import socket
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from pydantic import BaseModel

from llmd_kserve.governance.build import build_gateway
from llmd_kserve.governance.keys import VirtualKey, add_key
from llmd_kserve.governance.limits import RateLimited, RateLimiter
from llmd_kserve.router.app import running_router
from tests.faults.procs import Proc, engine, metric, request, router, running, wait_for
from tests.governance.test_keys import Clock

MODEL = "llama-8b-shape"
PROMPT = "tell me a long story"


# --- a real engine and router (processes) ----------------------------------------------------------------------------
@dataclass
class Stack:
    engine: Proc
    router: Proc
    keys: dict[str, str]
    audit: Path

    @property
    def port(self) -> int:
        return int(self.router.url.rsplit(":", 1)[1])

    def router_metrics(self) -> str:
        return request(self.router.url + "/metrics", headers={"Authorization": f"Bearer {self.keys['ops']}"})[1].decode()

    def engine_metrics(self) -> str:
        return request(self.engine.url + "/metrics")[1].decode()

    def billed(self, tenant: str, kind: str) -> float:
        return metric(self.router_metrics(), "llmd_gateway_tokens_total", tenant=tenant, kind=kind)

    def done(self) -> list[dict[str, Any]]:
        recs = [json.loads(x) for x in self.audit.read_text().splitlines()]
        return [r for r in recs if r["event"] == "done"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("billing")
    keys_file, audit = tmp / "keys.yaml", tmp / "audit.jsonl"
    keys = {t: add_key(keys_file, tenant=t, token_budget=10**9)[0] for t in ("same", "victim", "mallory", "cut")}
    keys["ops"] = add_key(keys_file, tenant="ops", admin=True)[0]  # reads /metrics (an operator key)
    keys["budget"] = add_key(keys_file, tenant="budget", token_budget=1000)[0]
    eng = engine(tmp, "e0")
    with running(eng):
        r = router(tmp, eng.url, "--keys-file", str(keys_file), "--audit-file", str(audit), "--config", "load-only")
        with running(r):
            yield Stack(eng, r, keys, audit)


def _stream(port: int, key: str, max_tokens: int, cut: int = 0, rid: str | None = None,
            extra: dict[str, Any] | None = None) -> tuple[int, int, dict[str, str]]:
    """(status, content events read, headers) of a streamed completion; ``cut``: drop the connection after that many."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    body = {"model": MODEL, "prompt": PROMPT, "max_tokens": max_tokens, "stream": True, "ignore_eos": True,
            **(extra or {})}
    headers = {"content-type": "application/json", "Authorization": f"Bearer {key}"}
    if rid:
        headers["x-request-id"] = rid
    c.request("POST", "/v1/completions", json.dumps(body), headers)
    r = c.getresponse()
    events = 0
    if r.status == 200:
        while (line := r.fp.readline()) and not line.startswith(b"data: [DONE]"):
            if line.startswith(b"data: {") and json.loads(line[6:]).get("choices"):
                events += 1
                if cut and events >= cut:
                    c.sock.shutdown(socket.SHUT_RDWR)
                    break
    else:
        r.read()
    c.close()
    return r.status, events, dict(r.headers)


def _parallel(n: int, fn: Any, *args: Any, **kwargs: Any) -> list[Any]:
    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(lambda _: fn(*args, **kwargs), range(n)))


def test_same_client_request_id_is_billed_once_per_request(stack: Stack) -> None:
    """H2: six parallel streams sharing one ``x-request-id`` are six bills, each with its own router id. (L6: a
    client that hangs up right after ``[DONE]`` got its whole answer: a 200, not a 499.)"""
    ok_before = metric(stack.router_metrics(), "llmd_router_requests_total", status="200")
    results = _parallel(6, _stream, stack.port, stack.keys["same"], 30, rid="same-id-123")
    assert all(st == 200 and n == 30 and h["x-request-id"] == "same-id-123" for st, n, h in results)
    assert wait_for(lambda: stack.billed("same", "completion") == 6 * 30)
    assert wait_for(lambda: metric(stack.router_metrics(), "llmd_router_requests_total", status="200") - ok_before == 6)
    assert metric(stack.router_metrics(), "llmd_router_requests_total", status="499") == 0
    assert wait_for(lambda: len([r for r in stack.done() if r["tenant"] == "same"]) == 6)
    done = [r for r in stack.done() if r["tenant"] == "same"]
    assert len({r["request_id"] for r in done}) == 6
    assert all(r["client_request_id"] == "same-id-123" and r["completion_tokens"] == 30
               and r["usage_source"] == "engine" for r in done)


def test_a_victims_request_id_does_not_move_the_bill(stack: Stack) -> None:
    """H2 across tenants: mallory's batch and the victim's stream share an id; each pays for its own tokens."""
    rid = "nightly-report-0007"

    def batch() -> int:
        return request(stack.router.url + "/v1/completions",
                       {"model": MODEL, "prompt": ["p"] * 8, "max_tokens": 30, "ignore_eos": True},
                       {"Authorization": f"Bearer {stack.keys['mallory']}", "x-request-id": rid})[0]

    with ThreadPoolExecutor(2) as pool:
        attacker = pool.submit(batch)
        victim = pool.submit(_stream, stack.port, stack.keys["victim"], 60, 0, rid)
        assert attacker.result() == 200 and victim.result()[:2] == (200, 60)
    assert wait_for(lambda: stack.billed("victim", "completion") == 60 and stack.billed("mallory", "completion") == 240)
    assert wait_for(lambda: len([r for r in stack.done() if r["client_request_id"] == rid]) == 2)
    done = {r["tenant"]: r for r in stack.done() if r["client_request_id"] == rid}
    assert done["victim"]["completion_tokens"] == 60 and done["mallory"]["completion_tokens"] == 240


def test_cut_streams_are_billed_and_counted(stack: Stack) -> None:
    """M1 + L6: a client that drops streams mid-way pays the prompt plus the tokens the engine streamed (at least
    what it read, at most what the engine produced), and each cut is a 499 in ``llmd_router_requests_total``."""
    before = stack.engine_metrics()
    cut_before = metric(stack.router_metrics(), "llmd_router_requests_total", status="499")
    results = _parallel(4, _stream, stack.port, stack.keys["cut"], 300, cut=20)
    assert all(st == 200 and n == 20 for st, n, _ in results)
    assert wait_for(lambda: len([r for r in stack.done() if r["tenant"] == "cut"]) == 4)
    after = stack.engine_metrics()
    produced_prompt = (metric(after, "vllm:prompt_tokens_total") - metric(before, "vllm:prompt_tokens_total"))
    produced = metric(after, "vllm:generation_tokens_total") - metric(before, "vllm:generation_tokens_total")
    billed = stack.billed("cut", "completion")
    assert stack.billed("cut", "prompt") == produced_prompt > 0
    assert 4 * 20 <= billed <= produced
    done = [r for r in stack.done() if r["tenant"] == "cut"]
    assert all(r["status"] == 499 and r["usage_source"] == "estimate" and r["completion_tokens"] >= 20 for r in done)
    assert metric(stack.router_metrics(), "llmd_router_requests_total", status="499") - cut_before == 4


def test_parallel_requests_do_not_overshoot_the_budget(stack: Stack) -> None:
    """M3: eight parallel 200-token streams on a 1,000-token budget: each reserves prompt + max_tokens at admission,
    so at most four run, and the key never uses more than its budget."""
    results = _parallel(8, _stream, stack.port, stack.keys["budget"], 200)
    ok = [r for r in results if r[0] == 200]
    refused = [r for r in results if r[0] == 429]
    assert len(ok) + len(refused) == 8 and 1 <= len(ok) <= 4 and all(n == 200 for _, n, _ in ok)
    assert all(h["x-llmd-drop-reason"] == "budget" for _, _, h in refused)
    assert wait_for(lambda: len([r for r in stack.done() if r["tenant"] == "budget"]) == len(ok))
    used = stack.billed("budget", "prompt") + stack.billed("budget", "completion")
    assert 200 * len(ok) < used <= 1000
    status, raw, _ = request(stack.router.url + "/v1/completions", {"model": MODEL, "prompt": PROMPT, "max_tokens": 200},
                             {"Authorization": f"Bearer {stack.keys['budget']}"})
    assert status == 429 and "may use up to" in json.loads(raw)["error"]["message"]


# --- a vLLM look-alike in-process: exact counts, vLLM's reading of stream_options -----------------------------------
class StreamOptions(BaseModel):
    """vLLM's model: pydantic's lax mode reads ``"false"``, ``0``, ``"no"`` and ``"off"`` as False."""

    include_usage: bool | None = True


@dataclass
class FakeVllm:
    """Streams ``max_tokens`` tokens (one event each) for a token-id prompt; ``hold_after``: stop sending after that
    many and keep the stream open. Counts what it produced, as an engine's counters would."""

    hold_after: int | None = None
    prompt_tokens: int = 0
    generated: int = 0
    options: list[Any] = field(default_factory=list)
    url: str = ""

    async def completions(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.options.append(body.get("stream_options"))
        n, prompt = body["max_tokens"], len(body["prompt"])
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        self.prompt_tokens += prompt
        for i in range(n):
            if self.hold_after is not None and i == self.hold_after:
                await asyncio.Event().wait()  # until the router drops the connection
            self.generated += 1
            await resp.write(b'data: {"id":"c","object":"text_completion","choices":[{"index":0,"text":"t%d",'
                             b'"finish_reason":null}]}\n\n' % i)
        if StreamOptions(**(body.get("stream_options") or {})).include_usage:
            await resp.write(b'data: {"id":"c","object":"text_completion","choices":[],"usage":{"prompt_tokens":%d,'
                             b'"completion_tokens":%d,"total_tokens":%d}}\n\n' % (prompt, n, prompt + n))
        await resp.write(b"data: [DONE]\n\n")
        return resp

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "m", "object": "model"}]})

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(text="vllm:num_requests_waiting 0\nvllm:num_requests_running 0\n")


@contextlib.asynccontextmanager
async def running_vllm(**kwargs: Any) -> AsyncIterator[FakeVllm]:
    fake = FakeVllm(**kwargs)
    app = web.Application()
    app.router.add_post("/v1/completions", fake.completions)
    app.router.add_get("/v1/models", fake.models)
    app.router.add_get("/metrics", fake.metrics)
    runner = web.AppRunner(app, handler_cancellation=True)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    fake.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield fake
    finally:
        await runner.cleanup()


async def _raw_stream(url: str, key: str, body: dict[str, Any], cut: int = 0) -> list[bytes]:
    """The ``data:`` lines of a streamed answer, read over a plain socket; ``cut``: close after that many events."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    data = json.dumps(body).encode()
    writer.write(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nAuthorization: "
                 b"Bearer %s\r\nContent-Length: %d\r\n\r\n%s" % (key.encode(), len(data), data))
    lines: list[bytes] = []
    while line := await reader.readline():
        if line.startswith(b"data: "):
            lines.append(line.strip())
            if cut and len(lines) >= cut:
                break
        if line.startswith(b"data: [DONE]"):
            break
    writer.close()
    return lines


async def _billed(url: str, ops_key: str, tenant: str) -> tuple[float, float]:
    text = (await asyncio.to_thread(request, url + "/metrics", None, {"Authorization": f"Bearer {ops_key}"}))[1].decode()
    return (metric(text, "llmd_gateway_tokens_total", tenant=tenant, kind="prompt"),
            metric(text, "llmd_gateway_tokens_total", tenant=tenant, kind="completion"))


async def test_cut_streams_are_billed_exactly_what_the_engine_produced(tmp_path: Path) -> None:
    """M1, exact: the engine streams 25 of 100 tokens and stalls; clients read 10 and leave. With no usage from the
    engine, each request is billed its prompt (7 token ids) plus the 25 tokens streamed: what the engine produced."""
    keys = tmp_path / "keys.yaml"
    key, _ = add_key(keys, tenant="t", token_budget=10**6)
    ops, _ = add_key(keys, tenant="ops", admin=True)
    audit = tmp_path / "audit.jsonl"
    body = {"model": "m", "prompt": [5, 6, 7, 8, 9, 10, 11], "max_tokens": 100, "stream": True}
    async with running_vllm(hold_after=25) as fake, running_router(
            endpoints=[fake.url], keys_file=str(keys), audit_file=str(audit), config="load-only") as rt:
        got = await asyncio.gather(*(_raw_stream(rt.url, key, body, cut=10) for _ in range(4)))
        assert all(len(lines) == 10 for lines in got)
        for _ in range(250):  # the router sees the cuts, settles and writes the done records
            if audit.read_text().count('"event":"done"') == 4:
                break
            await asyncio.sleep(0.02)
        billed = await _billed(rt.url, ops, "t")
        assert fake.generated == 4 * 25 and fake.prompt_tokens == 4 * 7
        assert billed == (fake.prompt_tokens, fake.generated)
    done = [json.loads(x) for x in audit.read_text().splitlines() if '"done"' in x]
    assert len(done) == 4 and all(r["status"] == 499 and r["usage_source"] == "estimate"
                                  and (r["prompt_tokens"], r["completion_tokens"]) == (7, 25) for r in done)


@pytest.mark.parametrize("include_usage", ["false", 0, "no", "off", False, None])
async def test_stream_options_cannot_turn_metering_off(tmp_path: Path, include_usage: Any) -> None:
    """M2: whatever the client puts in ``include_usage`` (but exactly ``true``), the engine is asked for usage, the
    stream is metered, and the client does not see the usage event it did not ask for."""
    keys = tmp_path / "keys.yaml"
    key, _ = add_key(keys, tenant="t", token_budget=10**6)
    ops, _ = add_key(keys, tenant="ops", admin=True)
    body = {"model": "m", "prompt": [1, 2, 3], "max_tokens": 12, "stream": True,
            "stream_options": {"include_usage": include_usage}}
    async with running_vllm() as fake, running_router(endpoints=[fake.url], keys_file=str(keys),
                                                      config="load-only") as rt:
        lines = await _raw_stream(rt.url, key, body)
        assert len(lines) == 13 and not any(b'"usage"' in ln for ln in lines)
        assert fake.options[-1]["include_usage"] is True
        assert await _billed(rt.url, ops, "t") == (3, 12)
        asked = await _raw_stream(rt.url, key, {**body, "stream_options": {"include_usage": True}})
        assert b'"usage"' in asked[-2]  # asked for with exactly true: the client gets it
        assert await _billed(rt.url, ops, "t") == (6, 24)


# --- the limiter and the gateway, on a fake clock ---------------------------------------------------------------------
def test_tokens_per_minute_are_reserved_at_admission_and_settled_after() -> None:
    """M3 for TPM: parallel admissions see each other's reservations; the unused part comes back at settle."""
    clock = Clock()
    lim, key = RateLimiter(clock), VirtualKey("k", tpm=1000)
    reserved = [lim.admit(key, 305) for _ in range(3)]
    with pytest.raises(RateLimited) as exc:
        lim.admit(key, 305)  # 85 left of 1,000: a fourth 305-token request waits
    assert exc.value.reason == "tpm" and int(exc.value.headers["Retry-After"]) == 14
    lim.settle(key, reserved[0], 5)  # that answer used only 5 tokens: 300 come back
    assert lim.admit(key, 305) == 305 and lim.used("k") == 5
    budget = VirtualKey("b", token_budget=1000)
    held = [lim.admit(budget, 300) for _ in range(3)]
    with pytest.raises(RateLimited) as exc:
        lim.admit(budget, 300)
    assert exc.value.reason == "budget" and "100 left" in exc.value.message and lim.reserved("b") == 900
    for r in held:
        lim.settle(budget, r, 100)
    assert lim.reserved("b") == 0 and lim.used("b") == 300 and lim.admit(budget, 700) == 700


async def test_hash_mode_without_guardrails_keeps_no_answer_text(tmp_path: Path) -> None:
    """L6: in ``hash`` mode without guardrails the answer is hashed, not kept; ``full`` keeps its first 256 KiB."""
    for content, kept in (("hash", 0), ("full", 256 * 1024)):
        gw = build_gateway(audit_file=tmp_path / f"{content}.jsonl", audit_content=content)
        adm = await gw.admit(None, f"r-{content}", {"prompt": "hi"}, "completion", None, None)
        tap = gw.tap(adm)
        assert tap is not None
        for _ in range(8):
            tap(b"x" * 65536)
        assert len(adm.captured) == kept
        await gw.finish(adm, 200, None)
        assert gw.trail is not None
        await gw.trail.close()
