"""Helpers for the Envoy tests: an EPP in this loop plus a real Envoy in front of it (skip when envoy cannot run)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from llmd_kserve.epp.envoy import EnvoyConfig, EnvoyNotAvailable, EnvoyProcess
from llmd_kserve.epp.server import EppSettings, RunningEpp, running_epp


@dataclass
class Gateway:
    epp: RunningEpp
    envoy: EnvoyProcess
    access_log: Path

    @property
    def url(self) -> str:
        return self.envoy.url

    async def wait_epp_down(self) -> None:
        """Until Envoy's gRPC health check has marked the EPP unhealthy: only then does a new ext_proc stream fail
        before the body went out, so that ``failure_mode_allow`` applies (the body is not kept for a retry)."""
        for _ in range(200):
            if self.envoy.stats("cluster.epp.membership_healthy").get("cluster.epp.membership_healthy") == 0:
                return
            await asyncio.sleep(0.05)
        raise AssertionError("Envoy never marked the EPP down")

    def log_lines(self, n: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """The first ``n`` access-log lines (Envoy flushes its file log about once a second)."""
        deadline = time.monotonic() + timeout
        while True:
            lines = self.access_log.read_text().splitlines() if self.access_log.exists() else []
            if len(lines) >= n or time.monotonic() > deadline:
                return [json.loads(line) for line in lines]
            time.sleep(0.1)


def require_envoy() -> None:
    """Skip (with the reason) when no envoy binary can run here."""
    import subprocess

    from llmd_kserve.epp.envoy import envoy_binary

    try:
        subprocess.run([envoy_binary(), "--version"], check=True, capture_output=True, timeout=30)
    except (EnvoyNotAvailable, OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"envoy cannot start here: {exc}")


def start_envoy(config: EnvoyConfig) -> EnvoyProcess:
    try:
        return EnvoyProcess(config).start()
    except EnvoyNotAvailable as exc:
        pytest.skip(f"envoy cannot start here: {exc}")


@contextlib.asynccontextmanager
async def gateway(tmp_path: Path, endpoints: Sequence[str], *, config: str = "round-robin",
                  response_mode: str = "full", epp: EppSettings | None = None, router: Mapping[str, Any] = {},
                  http_pick: bool = False, **envoy_kw: Any) -> AsyncIterator[Gateway]:
    """``router``: RouterSettings fields for the EPP (limits, tokenizer); ``http_pick``: Envoy calls the EPP's HTTP
    pick (ext_authz) instead of ext_proc; ``envoy_kw``: EnvoyConfig fields."""
    settings = epp or EppSettings(response_mode=response_mode)  # type: ignore[arg-type]
    async with running_epp(endpoints=endpoints, config=config, epp=settings, scrape_interval=0.05,
                           pick_port=0 if http_pick else None, **router) as running:
        log = tmp_path / f"access-{time.monotonic_ns()}.log"
        envoy = await asyncio.to_thread(start_envoy, EnvoyConfig(
            epp=running.grpc_address, response_mode=settings.response_mode, access_log=str(log),
            pick_http=running.pick_address, **envoy_kw))
        try:
            yield Gateway(running, envoy, log)
        finally:
            await asyncio.to_thread(envoy.stop)


def completion(model: str, prompt: str, max_tokens: int = 2) -> dict[str, Any]:
    """A completions request body."""
    return {"model": model, "prompt": prompt, "max_tokens": max_tokens}


async def overload(client: Any, epp: RunningEpp, model: str, n: int = 40) -> list[asyncio.Task[Any]]:
    """Send ``n`` prompts of ~4,000 tokens with long answers through the gateway and wait until the EPP holds them
    all in flight; the caller cancels the returned tasks."""
    load = [asyncio.create_task(client.post("/v1/completions",
                                            json=completion(model, f"request {i} " + "word " * 4000, 2000)))
            for i in range(n)]
    for _ in range(1000):
        if epp.state.scheduler.in_flight() >= n:
            return load
        await asyncio.sleep(0.02)
    raise AssertionError("the load never got in flight")
