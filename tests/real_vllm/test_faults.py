"""Real replicas failing under the router: one stopped (SIGSTOP: the first-byte timeout retries elsewhere and ejects
it; after SIGCONT it gets its prefixes again; with stall detection on, its stall budget catches it long before that
timeout and a probe brings it back) and one killed in the middle of a stream (SIGKILL: the client gets an
OpenAI-shaped SSE error, new requests are retried on the other replica, the dead one is ejected; restarted on the
same ports it is routed to again and its KV events reach the index).

These replicas are the module's own (two, started without ``up``, whose supervisor would stop the whole stack when
a replica dies); the module runs before the shared stack starts (``OWN_STACK``)."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from llmd_kserve.stack.procs import Proc, free_port, spawn, terminate, wait_healthy
from llmd_kserve.stack.vllm import ModelInfo, VllmReplica, replica_cores, startup_failure
from llmd_kserve.vllm_env import gpu_present
from tests.real_vllm.conftest import BLOCK, counter, held_blocks, router_over, token_ids, wait_for

pytestmark = [pytest.mark.real_vllm, pytest.mark.timeout(900)]
OWN_STACK = True


@dataclass
class Replicas:
    """Two vLLM replicas run by this module, each restartable on its own ports."""

    python: Path
    model_dir: Path
    log_dir: Path
    replicas: list[VllmReplica]
    procs: list[Proc]

    @property
    def urls(self) -> list[str]:
        return [r.url for r in self.replicas]

    @property
    def specs(self) -> list[str]:
        return [r.endpoint_spec for r in self.replicas]

    def signal(self, i: int, sig: signal.Signals) -> None:
        """``sig`` to replica ``i``'s process group: its API server and its engine core."""
        os.killpg(self.procs[i].popen.pid, sig)

    def start(self, i: int) -> Proc:
        r = self.replicas[i]
        return spawn(f"vllm-{i}", r.argv(self.python), self.log_dir, r.url, env=r.env(os.environ),
                     diagnose=startup_failure)

    async def restart(self, i: int) -> None:
        """Start replica ``i`` again after it died; returns once it answers ``/health`` (the event loop runs on)."""
        self.procs[i].popen.wait(timeout=30)
        self.procs[i].log.close()
        self.procs[i] = self.start(i)
        await asyncio.to_thread(wait_healthy, [self.procs[i]], 600)


@pytest.fixture(scope="module")
def replicas(vllm_python: Path, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:
    model, cores = ModelInfo.load(tiny_model_dir), replica_cores(2)
    reps = [VllmReplica(model, free_port(), free_port(), free_port(), core=cores[i], seed=i, cpu=not gpu_present())
            for i in range(2)]
    stack = Replicas(vllm_python, tiny_model_dir, tmp_path_factory.mktemp("fault-logs"), reps, [])
    try:
        stack.procs = [stack.start(i) for i in range(2)]
        wait_healthy(stack.procs, 600)
        yield stack
    finally:
        terminate(stack.procs)


async def _warm(session: aiohttp.ClientSession, router: Any, url: str, prompt: list[int]) -> None:
    """``prompt`` cached on the replica at ``url`` (sent there directly), and indexed by ``router``."""
    async with session.post(f"{url}/v1/completions", json={"model": "tiny-llama", "prompt": prompt,
                                                          "max_tokens": 1}) as r:
        assert r.status == 200, await r.text()
    want = len(prompt) // BLOCK
    await wait_for(lambda: held_blocks(router.state, url, prompt) == want, f"{want} blocks indexed for {url}")


async def _ask(session: aiohttp.ClientSession, router: Any, prompt: list[int], rid: str) -> str:
    """Streamed, so that the first byte is the first token (not the whole answer, slow on a loaded machine)."""
    async with session.post(f"{router.url}/v1/completions", headers={"x-request-id": rid},
                            json={"model": "tiny-llama", "prompt": prompt, "max_tokens": 2, "stream": True}) as r:
        body = await r.text()
        assert r.status == 200 and body.rstrip().endswith("data: [DONE]"), body
        endpoint: str = r.headers["x-llmd-endpoint"]
        return endpoint


async def _attempts(session: aiohttp.ClientSession, router: Any, rid: str) -> list[tuple[str, str]]:
    async with session.get(f"{router.url}/debug/decisions", params={"request_id": rid}) as r:
        return [(d["target"], d["outcome"]) for d in (await r.json())["decisions"]]


async def _metrics(session: aiohttp.ClientSession, router: Any) -> str:
    return await (await session.get(f"{router.url}/metrics")).text()


async def test_a_stopped_replica_times_out_is_ejected_and_returns(replicas: Replicas) -> None:
    rng = random.Random(31)
    e0, e1 = replicas.urls
    # metrics polled every 5 s stay fresh for 20 s: the router still takes the stopped replica for a live one; the
    # first-byte timeout leaves a loaded machine time for a first token, the ejection outlasts the next request;
    # stall detection off: this is the hard timeout's test (tests/faults/test_stalls.py has the stall's)
    async with router_over(replicas.specs, replicas.model_dir, first_byte_timeout=8.0, eject_s=15.0,
                           scrape_interval=5.0, scrape_idle_interval=5.0, stall_factor=0.0) as router, aiohttp.ClientSession() as s:
        held = [token_ids(8 * BLOCK, rng) for _ in range(2)]
        for prefix in held:
            await _warm(s, router, e1, prefix)
        replicas.signal(1, signal.SIGSTOP)
        try:
            assert await _ask(s, router, held[0] + token_ids(20, rng), "stopped-1") == e0
            assert await _attempts(s, router, "stopped-1") == [(e1, "timeout"), (e0, "ok")]
            page = await _metrics(s, router)
            assert counter(page, "llmd_router_endpoint_ejected", endpoint=e1) == 1
            assert counter(page, "llmd_router_retries_total") == 1
            # ejected: a prefix only the stopped replica holds goes straight to the other one
            assert await _ask(s, router, held[1] + token_ids(20, rng), "stopped-2") == e0
            assert await _attempts(s, router, "stopped-2") == [(e0, "ok")]
        finally:
            replicas.signal(1, signal.SIGCONT)

        def back() -> bool:
            state = {st.id: st for st in router.state.endpoint_states()}
            return e1 not in router.state.outliers.ejected_now() and not state[e1].metrics.stale

        await wait_for(back, "the continued replica eligible and scraped again")
        fresh = token_ids(8 * BLOCK, rng)
        await _warm(s, router, e1, fresh)
        assert await _ask(s, router, fresh + token_ids(20, rng), "continued") == e1


async def test_a_stopped_replica_is_suspect_after_its_stall_budget_and_returns_after_a_probe(
        replicas: Replicas) -> None:
    rng = random.Random(33)
    e0, e1 = replicas.urls
    # the first-byte timeout left at its default (120 s): only stall detection catches the stopped replica in time;
    # a floor that leaves a loaded machine time for a first token
    async with router_over(replicas.specs, replicas.model_dir, stall_floor_s=4.0, scrape_interval=5.0,
                           scrape_idle_interval=5.0) as router, aiohttp.ClientSession() as s:
        held = token_ids(8 * BLOCK, rng)
        await _warm(s, router, e1, held)
        replicas.signal(1, signal.SIGSTOP)
        try:
            assert await _ask(s, router, held + token_ids(20, rng), "stalled-1") == e0
            assert await _attempts(s, router, "stalled-1") == [(e1, "stall"), (e0, "ok")]
            page = await _metrics(s, router)
            assert counter(page, "llmd_router_stalls_total", endpoint=e1) == 1
            assert counter(page, "llmd_router_endpoint_suspect", endpoint=e1) == 1
            # suspect: a prefix only the stopped replica holds goes straight to the other one
            assert await _ask(s, router, held + token_ids(20, rng), "stalled-2") == e0
            assert await _attempts(s, router, "stalled-2") == [(e0, "ok")]
        finally:
            replicas.signal(1, signal.SIGCONT)
        await wait_for(lambda: e1 not in router.state.stalls.suspect, "a probe answered by the continued replica")
        fresh = token_ids(8 * BLOCK, rng)
        await _warm(s, router, e1, fresh)
        assert await _ask(s, router, fresh + token_ids(20, rng), "continued-2") == e1


async def test_a_killed_replica_ends_the_stream_cleanly_and_returns_after_restart(replicas: Replicas) -> None:
    rng = random.Random(32)
    e0, e1 = replicas.urls
    async with router_over(replicas.specs, replicas.model_dir, eject_s=2.0) as router, \
            router_over(replicas.specs, replicas.model_dir, config="round-robin", scrape_interval=2.0,
                        scrape_idle_interval=2.0, eject_s=60.0) as other, aiohttp.ClientSession() as s:
        prefix = token_ids(8 * BLOCK, rng)
        await _warm(s, router, e1, prefix)
        body = {"model": "tiny-llama", "prompt": prefix + token_ids(20, rng), "max_tokens": 4000, "ignore_eos": True,
                "stream": True}
        async with s.post(f"{router.url}/v1/completions", json=body, headers={"x-request-id": "killed"}) as r:
            assert r.status == 200 and r.headers["x-llmd-endpoint"] == e1
            events = []
            async for line in r.content:
                if line.startswith(b"data: "):
                    events.append(line[6:].strip())
                if len(events) == 3:
                    replicas.signal(1, signal.SIGKILL)
            # the stream ends with an OpenAI-shaped error event, no [DONE]
            error = json.loads(events[-1])["error"]
            assert set(error) == {"message", "type", "param", "code"} and "mid-stream" in error["message"]
            assert b"[DONE]" not in events and all(b'"text"' in e for e in events[:-1]) and len(events) > 3
        assert await _attempts(s, router, "killed") == [(e1, "upstream_broke")]
        assert e1 in router.state.outliers.ejected_now()
        # a router that has not seen the failure yet tries the dead replica, fails before the first byte, retries
        # elsewhere: "connect" once the port is closed, "disconnected" while a surviving child of the killed server
        # still holds its listening socket (the kernel accepts, nobody answers)
        targets = [await _ask(s, other, token_ids(40, rng), f"after-kill-{i}") for i in range(2)]
        assert targets == [e0, e0]
        tries = sorted([await _attempts(s, other, f"after-kill-{i}") for i in range(2)], key=len)
        assert tries[0] == [(e0, "ok")] and tries[1][1] == (e0, "ok")
        assert tries[1][0][0] == e1 and tries[1][0][1] in {"connect", "disconnected"}, tries
        assert counter(await _metrics(s, other), "llmd_router_endpoint_ejected", endpoint=e1) == 1

        await replicas.restart(1)  # the same ports: the same endpoint comes back

        def back() -> bool:
            state = {st.id: st for st in router.state.endpoint_states()}
            return e1 not in router.state.outliers.ejected_now() and not state[e1].metrics.stale

        await wait_for(back, "the restarted replica eligible and scraped again", timeout=120)
        fresh = token_ids(8 * BLOCK, rng)
        await _warm(s, router, e1, fresh)  # its new engine's KV events reach the router's index
        assert await _ask(s, router, fresh + token_ids(20, rng), "restarted") == e1
