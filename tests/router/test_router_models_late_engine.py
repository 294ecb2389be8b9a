"""An engine that comes up after the router still shows in the router's /v1/models as soon as it answers."""

from __future__ import annotations

import aiohttp

from llmd_kserve.engine_sim.server import running_engine
from llmd_kserve.router.app import running_router
from llmd_kserve.stack.procs import free_port


async def test_models_listed_once_a_late_engine_answers() -> None:
    port = free_port()
    async with running_router(endpoints=[f"http://127.0.0.1:{port}"], config="round-robin",
                              scrape_interval=0.02) as router, aiohttp.ClientSession() as http:
        async with http.get(f"{router.url}/v1/models") as r:
            assert (await r.json())["data"] == []  # nothing answers yet
        async with running_engine(port=port, model="late-model"), http.get(f"{router.url}/v1/models") as r:
            assert [m["id"] for m in (await r.json())["data"]] == ["late-model"]
