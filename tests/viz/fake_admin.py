"""FakeAdminRouter: a stand-in for the router's ``POST /admin/config`` (owned by another branch until it merges).

It answers as the real endpoint is specified: 200 ``{"status": "applied", ...}`` after validating the body with the
project's own config loader, 400 with an OpenAI-shaped error naming the bad field's path, 401 without the key.
It runs its own event loop in a thread, because the client under test (``viz.admin.push_config``) is synchronous.
"""

from __future__ import annotations

import asyncio
import threading

from aiohttp import web

from llmd_kserve.config.loader import parse_config
from llmd_kserve.errors import ConfigError


class FakeAdminRouter:
    def __init__(self, api_key: str | None = None) -> None:
        self.api_key = api_key
        self.applied: list[dict] = []
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    async def _admin(self, request: web.Request) -> web.Response:
        if self.api_key and request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return web.json_response({"error": {"message": "invalid API key", "type": "AuthenticationError",
                                                "param": None, "code": 401}}, status=401)
        doc = await request.json()
        try:
            config = parse_config(doc, "admin")
        except ConfigError as exc:
            return web.json_response({"error": {"message": str(exc), "type": "BadRequestError", "param": exc.path,
                                                "code": 400}}, status=400)
        self.applied.append(doc)
        return web.json_response({"status": "applied", "profiles": [p.name for p in config.scheduling_profiles]})

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_post("/admin/config", self._admin)
        self._runner = web.AppRunner(app)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        self._ready.set()
        self._loop.run_forever()

    def __enter__(self) -> FakeAdminRouter:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fake admin router did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        fut = asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop)
        fut.result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
