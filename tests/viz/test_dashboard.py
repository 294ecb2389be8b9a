"""The dashboard server against a live router and simulated engines: the page, plotly.js served locally, figures
with the engines' numbers, the last decision explained, and a dead router shown as one line."""

from __future__ import annotations

import asyncio
import contextlib

import aiohttp

from llmd_kserve.engine_sim.server import running_engine
from llmd_kserve.router.app import running_router
from llmd_kserve.viz.dashboard import running_dashboard

MODEL = "llama-8b-shape"


@contextlib.asynccontextmanager
async def live_stack(n: int = 2, **router_settings):
    async with contextlib.AsyncExitStack() as st:
        engines = [await st.enter_async_context(running_engine(port=0, model=MODEL, time_scale=0.05, seed=i))
                   for i in range(n)]
        router = await st.enter_async_context(running_router(endpoints=[e.url for e in engines],
                                                             config="load-only", scrape_interval=0.02,
                                                             **router_settings))
        yield engines, router


async def _traffic(url: str, n: int, key: str | None = None) -> None:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with aiohttp.ClientSession(headers=headers) as s:
        for i in range(n):
            body = {"model": MODEL, "prompt": "shared system prompt " * 30 + f"question {i % 3}", "max_tokens": 4}
            async with s.post(f"{url}/v1/completions", json=body) as r:
                assert r.status == 200


async def _figures_when(session, url: str, pred, tries: int = 300) -> dict:
    for _ in range(tries):
        async with session.get(f"{url}/api/figures") as r:
            assert r.status == 200
            body = await r.json()
        if pred(body):
            return body
        await asyncio.sleep(0.05)
    raise AssertionError(f"dashboard never got there: {body.get('error')} samples={body.get('samples')}")


async def test_dashboard_serves_live_figures_of_a_router() -> None:
    async with live_stack() as (engines, router), \
            running_dashboard(router.url, interval=0.1) as dash, aiohttp.ClientSession() as s:
        async with s.get(dash.url + "/") as r:
            page = await r.text()
            assert r.status == 200 and 'src="plotly.min.js"' in page and "cdn" not in page.lower()
        async with s.get(dash.url + "/plotly.min.js") as r:
            js = await r.read()
            assert r.status == 200 and len(js) > 1_000_000 and b"Plotly" in js[:5000] + js[-5000:]
        await _traffic(router.url, 12)
        body = await _figures_when(s, dash.url, lambda b: "decision" in b["figures"] and b["samples"] >= 2)
        assert body["error"] is None and set(body["figures"]) == {"hit_rate", "latency", "endpoints", "decision"}
        hit = body["figures"]["hit_rate"]["data"]
        assert hit[0]["name"].startswith("engines") and any(y is not None for y in hit[0]["y"])
        heat = body["figures"]["endpoints"]["data"][0]
        assert sorted(heat["y"]) == sorted(e.url for e in engines)
        last = router.state.decisions.recent(1)[-1]
        bars = [t for t in body["figures"]["decision"]["data"] if t["type"] == "bar"]
        assert {t["name"].split(" ")[0] for t in bars} == {k.split("/", 1)[1] for k in last["weights"]}
        assert body["summary"]["config_hash"] == last["config_hash"]


async def test_a_dead_router_is_one_line_on_the_page() -> None:
    async with live_stack(1) as (_engines, router):
        url = router.url
    async with running_dashboard(url, interval=0.1) as dash, aiohttp.ClientSession() as s:
        body = await _figures_when(s, dash.url, lambda b: b["error"])
        assert "router" in body["error"] and "\n" not in body["error"] and body["samples"] == 0
        assert set(body["figures"]) == {"hit_rate", "latency", "endpoints"}  # empty figures still draw


async def test_a_router_with_api_keys_needs_the_key() -> None:
    """Every router route but /health needs a key when keys are on: without one the page says so in one line."""
    key = "sk-dashboard-test-key"
    async with live_stack(1, api_keys=(key,)) as (_engines, router), aiohttp.ClientSession() as s:
        await _traffic(router.url, 3, key)
        async with running_dashboard(router.url, interval=0.1) as dash:
            body = await _figures_when(s, dash.url, lambda b: b["error"])
            assert "401" in body["error"] and "api_key" in body["error"] and "\n" not in body["error"]
        async with running_dashboard(router.url, interval=0.1, api_key=key) as dash:
            body = await _figures_when(s, dash.url, lambda b: b["samples"] >= 2)
            assert body["error"] is None


def test_cli_refuses_a_busy_port_in_one_line() -> None:
    import os
    import socket
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = subprocess.run([sys.executable, "-m", "llmd_kserve.cli", "dashboard", "--router", "http://127.0.0.1:9",
                              "--port", str(port)], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("llmd-kserve dashboard: error: port: cannot listen")
