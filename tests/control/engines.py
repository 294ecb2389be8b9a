"""A lean HTTP client for tests of the control parts that call engines (closed on exit)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from llmd_kserve.control.engine_api import EngineCall, engine_call
from llmd_kserve.lean_http import StreamClient


@contextlib.contextmanager
def lean_call() -> Iterator[EngineCall]:
    client = StreamClient()
    try:
        yield engine_call(client)
    finally:
        client.close()
