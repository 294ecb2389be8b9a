"""FAULTS-2026-12 M4: a tenant that took every flow-control slot first starves no other tenant (headroom).
M5: a key's ``max_concurrency`` holds without flow control (429 ``concurrency``), and with flow control it counts
that key's requests only, so a sibling key of the same tenant does not hold it up.

A real router in-process over a fake engine whose ``hold…`` streams stay open until the test opens a gate: the
order of events (which requests finished while the others were still held) is what the tests assert."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from llmd_kserve.governance.keys import add_key
from llmd_kserve.router.app import running_router
from tests.router.fake_upstream import FakeUpstream


@dataclass
class GatedUpstream(FakeUpstream):
    """Streams of prompts starting with ``hold`` send their headers, then wait for ``gate`` before their tokens."""

    gate: asyncio.Event = field(default_factory=asyncio.Event)
    holding: int = 0

    async def completions(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if not str(body.get("prompt", "")).startswith("hold"):
            return await super().completions(request)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        self.holding += 1
        try:
            await self.gate.wait()
        finally:
            self.holding -= 1
        await resp.write(b'data: {"choices":[{"index":0,"text":"x","finish_reason":"length"}]}\n\ndata: [DONE]\n\n')
        return resp


@contextlib.asynccontextmanager
async def running_gated() -> AsyncIterator[GatedUpstream]:
    fake = GatedUpstream(tokens=2)
    app = web.Application()
    app.router.add_post("/v1/completions", fake.completions)
    app.router.add_get("/v1/models", fake.models)
    app.router.add_get("/metrics", fake.metrics)
    runner = web.AppRunner(app, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    fake.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield fake
    finally:
        fake.gate.set()
        await runner.cleanup()


async def _post(s: aiohttp.ClientSession, url: str, key: str, prompt: str) -> tuple[int, str | None, bytes]:
    body: dict[str, Any] = {"model": "fake-model", "prompt": prompt, "max_tokens": 2, "stream": True}
    async with s.post(url + "/v1/completions", json=body, headers={"Authorization": f"Bearer {key}"}) as r:
        return r.status, r.headers.get("x-llmd-drop-reason"), await r.read()


async def _until(check: Any, what: str) -> None:
    for _ in range(2000):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never: {what}")


async def test_m4_a_tenant_holding_the_slots_leaves_room_for_a_vip(tmp_path):
    keys = tmp_path / "keys.yaml"
    flood, _ = add_key(keys, tenant="flood", priority=0)
    vip, _ = add_key(keys, tenant="vip", priority=9)
    async with running_gated() as fake, running_router(endpoints=[fake.url], keys_file=str(keys),
                                                       flow_per_endpoint=4, flow_ttl_s=5) as router, \
            aiohttp.ClientSession() as s:
        q = router.state.governance.gateway.flow.queue
        floods = [asyncio.ensure_future(_post(s, router.url, flood, f"hold{i}")) for i in range(12)]
        await _until(lambda: fake.holding == q.in_flight and fake.holding + sum(q.depth().values()) == 12,
                     "every flood request held upstream or queued")
        vips = [await _post(s, router.url, vip, f"vip{i}") for i in range(3)]  # one after another
        assert [v[:2] for v in vips] == [(200, None)] * 3
        assert q.in_flight == 3  # one slot of 4 kept for a tenant holding none
        assert not any(f.done() for f in floods) and fake.holding == 3  # served while the flood still holds its 3
        fake.gate.set()
        assert [f[0] for f in await asyncio.gather(*floods)] == [200] * 12
        assert q.in_flight == 0 and q.depth() == {} and q.key_in_flight == {}


async def test_m5_max_concurrency_without_flow_control_is_enforced(tmp_path):
    keys = tmp_path / "keys.yaml"
    capped, _ = add_key(keys, tenant="t", max_concurrency=2)
    async with running_gated() as fake, running_router(endpoints=[fake.url], keys_file=str(keys)) as router, \
            aiohttp.ClientSession() as s:
        held = [asyncio.ensure_future(_post(s, router.url, capped, f"hold{i}")) for i in range(2)]
        await _until(lambda: fake.holding == 2, "two streams held")
        over = [await _post(s, router.url, capped, "short") for _ in range(3)]
        for status, reason, raw in over:
            assert (status, reason) == (429, "concurrency") and b"in flight at once" in raw
        fake.gate.set()
        assert [h[0] for h in await asyncio.gather(*held)] == [200, 200]
        assert (await _post(s, router.url, capped, "short"))[0] == 200  # its slots are back


async def test_m5_a_sibling_key_does_not_hold_up_an_idle_key(tmp_path):
    keys = tmp_path / "keys.yaml"
    s1, _ = add_key(keys, tenant="shared", max_concurrency=1)
    s2, _ = add_key(keys, tenant="shared")
    async with running_gated() as fake, running_router(endpoints=[fake.url], keys_file=str(keys),
                                                       flow_per_endpoint=8) as router, aiohttp.ClientSession() as s:
        bulk = [asyncio.ensure_future(_post(s, router.url, s2, f"hold{i}")) for i in range(3)]
        await _until(lambda: fake.holding == 3, "three s2 streams held")
        assert (await _post(s, router.url, s1, "short"))[0] == 200  # s1 has none in flight: it goes now
        assert fake.holding == 3 and not any(b.done() for b in bulk)
        queued = asyncio.ensure_future(_post(s, router.url, s1, "hold-s1"))
        await _until(lambda: fake.holding == 4, "s1's own stream held")
        second = asyncio.ensure_future(_post(s, router.url, s1, "short"))  # s1 at its limit of 1: this one waits
        q = router.state.governance.gateway.flow.queue
        await _until(lambda: q.depth() == {0: 1}, "s1's second request queued")
        assert (await _post(s, router.url, s2, "short"))[0] == 200  # ...and blocks nobody else of its tenant
        fake.gate.set()
        assert [r[0] for r in await asyncio.gather(*bulk, queued, second)] == [200] * 5
        assert q.in_flight == 0 and q.key_in_flight == {} and q.tenant_in_flight == {}
