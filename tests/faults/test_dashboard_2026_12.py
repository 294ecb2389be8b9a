"""The dashboard (FAULTS-2026-12 L1): a request id cannot inject plotly markup (a link) into a figure; the page
answers no other site's name (DNS rebinding) or origin; it relays nothing to a tenant's key."""

from __future__ import annotations

import asyncio

import aiohttp

from llmd_kserve.engine_sim.server import running_engine
from llmd_kserve.governance.keys import add_key
from llmd_kserve.router.app import running_router
from llmd_kserve.viz.dashboard import running_dashboard

MODEL = "llama-8b-shape"
INJECTED = ('<a href="https://evil.example/x" style="font-size:30px;fill:red">SESSION EXPIRED: re-login</a>'
            '<img src=x onerror=alert(1)>')


async def _figures(session: aiohttp.ClientSession, url: str, **headers: str) -> tuple[int, dict | str]:
    async with session.get(url + "/api/figures", headers=headers) as r:
        return r.status, (await r.json() if r.content_type == "application/json" else await r.text())


async def test_router_data_is_escaped_and_only_local_names_are_served(tmp_path):
    keys = tmp_path / "keys.yaml"
    tenant, _ = add_key(keys, tenant="small")
    operator, _ = add_key(keys, tenant="ops", admin=True)
    assert len(INJECTED) <= 128
    async with running_engine(port=0, model=MODEL, time_scale=0.02) as eng, running_router(
            endpoints=[eng.url], keys_file=str(keys), scrape_interval=0.05) as router, running_dashboard(
            router.url, interval=0.05, api_key=operator) as dash, running_dashboard(
            router.url, interval=0.05, api_key=tenant) as tenant_dash, aiohttp.ClientSession() as s:
        async with s.post(router.url + "/v1/completions", json={"model": MODEL, "prompt": "hi", "max_tokens": 2},
                          headers={"Authorization": f"Bearer {tenant}", "x-request-id": INJECTED}) as r:
            assert r.status == 200
        for _ in range(400):
            if (dash.dashboard.decision or {}).get("client_request_id") == INJECTED:
                break
            await asyncio.sleep(0.025)
        status, body = await _figures(s, dash.url)
        assert status == 200 and isinstance(body, dict)
        title = body["figures"]["decision"]["layout"]["title"]["text"]
        assert "&lt;a href=" in title and "<a" not in title and "<img" not in title
        assert all("<" not in str(x) for trace in body["figures"]["decision"]["data"] for x in trace.get("x", ()))
        # a re-pointed name or another site's page gets nothing
        for headers in ({"Host": "attacker-rebind.example"}, {"Origin": "http://evil.example"}):
            for path in ("/", "/api/figures"):
                async with s.get(dash.url + path, headers=headers) as r:
                    assert r.status == 403 and INJECTED not in await r.text(), (headers, path)
        host = dash.url.removeprefix("http://").replace("127.0.0.1", "localhost")
        assert (await _figures(s, dash.url, Host=host))[0] == 200
        # a tenant's key reads no other tenant's requests through the dashboard
        status, body = await _figures(s, tenant_dash.url)
        assert status == 200 and isinstance(body, dict)
        assert "operator key" in body["error"] and "decision" not in body["figures"]
