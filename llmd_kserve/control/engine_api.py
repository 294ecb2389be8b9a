"""Short calls to an engine's side APIs (``/v1/models``, ``/kv_event_sources``, ``/render``) over the lean client."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from llmd_kserve.lean_http import StreamClient

EngineCall = Callable[[str, str, bytes | None, float], Awaitable[tuple[int, bytes]]]
"""``(base URL, path, JSON body or None for a GET, timeout s) -> (status, body)``; raises OSError or TimeoutError."""
_JSON = {"Content-Type": "application/json"}


def engine_call(client: StreamClient) -> EngineCall:
    """An :data:`EngineCall` on ``client``: the same keep-alive connections as the requests it forwards."""

    async def call(base: str, path: str, body: bytes | None, timeout: float) -> tuple[int, bytes]:
        async with asyncio.timeout(timeout):
            ex = await client.request(base, path, body or b"", _JSON if body is not None else {},
                                      method="GET" if body is None else "POST")
            try:
                raw = await ex.read_all(timeout)
            except BaseException:
                ex.close()
                raise
            ex.release()
            return ex.head.result().status, raw

    return call
