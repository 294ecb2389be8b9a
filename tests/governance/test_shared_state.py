"""Rate limits, budgets and token spend in a real ``redis-server`` (``--state-url``): the same verdicts as the in-memory
limiter; two router processes sharing one tenant's limits; spent budget kept across router restarts; Redis stopped
(fail closed, counted, logged once) and back (admitted again, spend kept)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from llmd_kserve.errors import ConfigError
from llmd_kserve.governance.keys import VirtualKey, add_key
from llmd_kserve.governance.limits import RateLimited, RateLimiter
from llmd_kserve.governance.shared_state import FailurePolicy, SharedLimiter
from llmd_kserve.router.app import running_router
from llmd_kserve.stack.procs import free_port
from llmd_kserve.state_store import StateStore, StateUnavailable
from tests.governance.redis_server import RedisServer, redis_server  # noqa: F401  (fixture)
from tests.router.fake_upstream import running_fake

BODY = {"model": "fake-model", "prompt": "abcdefgh", "max_tokens": 5}
"""10 prompt tokens through the fake engine's /render (as its usage says) + 5: each request reserves what it uses."""
OPERATOR = "operator-token"


async def _verdict(lim, key: VirtualKey, reserve: int) -> tuple[str, object]:
    try:
        v = lim.admit(key, reserve)
        return "ok", (await v if asyncio.iscoroutine(v) else v)
    except RateLimited as exc:
        return exc.reason, exc.message


async def test_same_verdicts_as_the_in_memory_limiter(redis_server):  # noqa: F811
    shared, memory = SharedLimiter(StateStore(redis_server.url)), RateLimiter()
    try:
        cases = [(VirtualKey("a", rpm=3), [0] * 5),
                 (VirtualKey("b", tpm=100, token_budget=250), [40, 40, 40, 200, 10]),
                 (VirtualKey("c", token_budget=100), [60, 41, 40])]
        for key, reserves in cases:
            for r in reserves:
                assert await _verdict(shared, key, r) == await _verdict(memory, key, r), (key.id, r)
        c = cases[2][0]
        await shared.settle(c, 60, 30)  # used 30 of 60 reserved: 30 back
        memory.settle(c, 60, 30)
        await shared.settle(c, 40, 40)
        memory.settle(c, 40, 40)
        assert await shared.used(c) == memory.used(c.id) == 70
        assert await _verdict(shared, c, 31) == await _verdict(memory, c, 31)  # 30 left
        assert (await _verdict(shared, c, 30))[0] == (await _verdict(memory, c, 30))[0] == "ok"
        await shared.settle(c, 30, 30)
        memory.settle(c, 30, 30)
        exhausted = await _verdict(shared, c, 1)
        assert exhausted == await _verdict(memory, c, 1) and exhausted[0] == "budget"
        assert "exhausted (100 of 100" in str(exhausted[1])
    finally:
        await shared.close()


def test_failure_policy_parses_per_kind():
    assert FailurePolicy.parse("open") == FailurePolicy("open", "open")
    assert FailurePolicy.parse("rate=open") == FailurePolicy("closed", "open")
    assert FailurePolicy.parse("budget=closed,rate=open") == FailurePolicy("closed", "open")
    with pytest.raises(ConfigError, match="state_failure_policy"):
        FailurePolicy.parse("sometimes")


def _keys(tmp_path: Path) -> tuple[Path, str, str]:
    keys = tmp_path / "keys.yaml"
    rpm_key, _ = add_key(keys, tenant="acme", models=("fake-model",), rpm=30)
    budget_key, _ = add_key(keys, tenant="acme", models=("fake-model",), token_budget=200)
    return keys, rpm_key, budget_key


def _start_router(tmp_path: Path, port: int, upstream: str, keys: Path, state_url: str) -> subprocess.Popen[bytes]:
    (tmp_path / "operators").write_text(OPERATOR + "\n")
    log = open(tmp_path / f"router-{port}.log", "ab")  # noqa: SIM115  (the child keeps it)
    return subprocess.Popen(
        [sys.executable, "-m", "llmd_kserve.cli", "router", "--host", "127.0.0.1", "--port", str(port),
         "--endpoints", upstream, "--served-model", "fake-model", "--tokenizer", "render", "--keys-file", str(keys),
         "--api-keys-file", str(tmp_path / "operators"), "--state-url", state_url],
        stdout=log, stderr=log, env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})


async def _wait_up(s: aiohttp.ClientSession, url: str, proc: subprocess.Popen[bytes]) -> None:
    for _ in range(600):
        assert proc.poll() is None, "the router exited"
        try:
            async with s.get(url + "/health") as r:
                if r.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.05)
    raise AssertionError("the router did not come up")


async def _post(s: aiohttp.ClientSession, url: str, key: str) -> tuple[int, dict, dict]:
    async with s.post(url + "/v1/completions", json=BODY, headers={"Authorization": f"Bearer {key}"}) as r:
        return r.status, json.loads(await r.read()), dict(r.headers)


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        p.wait(30)


@pytest.mark.slow
async def test_two_router_processes_share_one_tenants_limits_and_keep_spend_across_restarts(
        tmp_path, redis_server):  # noqa: F811
    keys, rpm_key, budget_key = _keys(tmp_path)
    ports = [free_port(), free_port()]
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    async with running_fake(tokens=5) as fake, aiohttp.ClientSession() as s:
        procs = [_start_router(tmp_path, p, fake.url, keys, redis_server.url) for p in ports]
        try:
            for url, proc in zip(urls, procs, strict=True):
                await _wait_up(s, url, proc)
            # RPM 30: 60 requests at once, half through each router
            t0 = time.monotonic()
            rpm_results = await asyncio.gather(*(_post(s, urls[i % 2], rpm_key) for i in range(60)))
            elapsed = time.monotonic() - t0
            admitted = sum(st == 200 for st, _, _ in rpm_results)
            refused = [h["x-llmd-drop-reason"] for st, _, h in rpm_results if st == 429]
            assert admitted + len(refused) == 60 and set(refused) == {"rpm"}
            assert 30 <= admitted <= 30 + int(elapsed * 30 / 60)  # the bucket refills 0.5 per second meanwhile
            # token budget 200: requests of up to 15 tokens (10 prompt + 5) through both routers until refused
            spent, budget_results = 0, []
            for _ in range(4):
                budget_results = await asyncio.gather(*(_post(s, urls[i % 2], budget_key) for i in range(8)))
                spent += sum(b["usage"]["total_tokens"] for st, b, _ in budget_results if st == 200)
            assert spent == 13 * 15  # exactly at the budget: the 14th request's 15 tokens do not fit in what is left
            assert any(st == 429 and h["x-llmd-drop-reason"] == "budget" for st, _, h in budget_results)
        finally:
            _stop(procs)
        procs = [_start_router(tmp_path, p, fake.url, keys, redis_server.url) for p in ports]
        try:
            for url, proc in zip(urls, procs, strict=True):
                await _wait_up(s, url, proc)
            for url in urls:  # both restarted: the spent budget is still spent
                st, body, headers = await _post(s, url, budget_key)
                assert st == 429 and headers["x-llmd-drop-reason"] == "budget"
                assert body["error"]["code"] == 429 and f"{spent} used" in body["error"]["message"]
        finally:
            _stop(procs)


@pytest.mark.slow
async def test_redis_stopped_fails_closed_counted_logged_once_and_recovers(tmp_path, redis_server, caplog):  # noqa: F811
    caplog.set_level(logging.WARNING, "llmd_kserve.state_store")
    keys, rpm_key, budget_key = _keys(tmp_path)
    (tmp_path / "operators").write_text(OPERATOR + "\n")
    async with running_fake(tokens=5) as fake, running_router(
            endpoints=[fake.url], served_models=("fake-model",), keys_file=str(keys), api_keys=(OPERATOR,),
            state_url=redis_server.url) as router, aiohttp.ClientSession() as s:
        registry = router.state.metrics.registry
        st, first, _ = await _post(s, router.url, budget_key)
        assert st == 200
        redis_server.stop()
        for _ in range(3):
            st, body, headers = await _post(s, router.url, budget_key)
            assert st == 503 and headers["x-llmd-drop-reason"] == "state_unavailable"
            assert body["error"]["type"] == "ServiceUnavailableError"
            assert "token budget cannot be checked" in body["error"]["message"]
            st, body, headers = await _post(s, router.url, rpm_key)  # rate limits: closed by default too
            assert st == 503 and "rate limits cannot be checked" in body["error"]["message"]
        assert registry.get_sample_value("llmd_router_state_errors_total", {"op": "admit"}) == 6
        assert sum("unreachable" in r.getMessage() for r in caplog.records) == 1  # once per outage
        redis_server.start()  # same directory: the append-only file brings the spend back
        for _ in range(100):  # calls fail at once for a second after a failure, then Redis is tried again
            st, _, headers = await _post(s, router.url, budget_key)
            if st == 200:
                break
            assert st == 503 and headers["x-llmd-drop-reason"] == "state_unavailable"
            await asyncio.sleep(0.05)
        assert st == 200
        assert sum("reachable again" in r.getMessage() for r in caplog.records) == 1
        shared = router.state.governance.gateway.shared
        key = router.state.governance.gateway.keys.authenticate({"Authorization": f"Bearer {budget_key}"})
        assert await shared.used(key) == 2 * first["usage"]["total_tokens"]


async def test_after_a_failed_call_calls_fail_at_once_for_a_while():
    pytest.importorskip("redis", reason="the redis package is not installed (pip install 'llmd-kserve[redis]')")
    now = [0.0]
    store = StateStore(f"redis://127.0.0.1:{free_port()}/0", clock=lambda: now[0])  # nothing listens there
    tried = []

    async def ping():
        tried.append(now[0])
        return await store.client.ping()

    try:
        for t in (0.0, 0.5, 0.99, 1.0, 1.5, 2.5):
            now[0] = t
            with pytest.raises(StateUnavailable):
                await store.call("read", ping)
        assert tried == [0.0, 1.0, 2.5] and store.failures == 6
    finally:
        await store.close()


@pytest.mark.slow
async def test_rate_limits_fail_open_when_told(tmp_path, redis_server):  # noqa: F811
    keys, rpm_key, budget_key = _keys(tmp_path)
    async with running_fake(tokens=5) as fake, running_router(
            endpoints=[fake.url], served_models=("fake-model",), keys_file=str(keys), state_url=redis_server.url,
            state_failure_policy="rate=open") as router, aiohttp.ClientSession() as s:
        redis_server.stop()
        assert (await _post(s, router.url, rpm_key))[0] == 200
        assert (await _post(s, router.url, budget_key))[0] == 503  # budgets stay closed


async def test_tokens_settled_while_redis_is_away_are_charged_when_it_is_back(redis_server):  # noqa: F811
    key = VirtualKey("k", tenant="acme", token_budget=1000)
    shared = SharedLimiter(StateStore(redis_server.url))
    reserved = await shared.admit(key, 100)
    redis_server.stop()
    await shared.settle(key, reserved, 70)  # kept, not lost
    redis_server.start()
    await shared.close()  # writes what is pending
    again = SharedLimiter(StateStore(redis_server.url))
    try:
        assert await again.used(key) == 70
        with pytest.raises(RateLimited, match="has 930 left"):  # nothing is still reserved
            await again.admit(key, 931)
    finally:
        await again.close()


@pytest.mark.slow
async def test_the_epp_behind_envoy_and_a_router_share_one_keys_limit(tmp_path, redis_server):  # noqa: F811
    from tests.epp.gateway import gateway, require_envoy
    from tests.epp.upstream import running_upstream

    require_envoy()
    keys = tmp_path / "keys.yaml"
    key, _ = add_key(keys, tenant="gold", rpm=2)
    auth = {"Authorization": f"Bearer {key}"}
    body = {"model": "m", "prompt": "hello", "max_tokens": 5}
    async with running_upstream() as up, gateway(
            tmp_path, [up.url], router={"keys_file": str(keys), "state_url": redis_server.url}) as gw, running_router(
            endpoints=[up.url], served_models=("m",), keys_file=str(keys), state_url=redis_server.url) as router, \
            aiohttp.ClientSession() as s:
        statuses = []
        for url in (gw.url, router.url, gw.url, router.url):
            async with s.post(url + "/v1/completions", json=body, headers=auth) as r:
                statuses.append((r.status, r.headers.get("x-llmd-drop-reason")))
        assert statuses == [(200, None), (200, None), (429, "rpm"), (429, "rpm")]
