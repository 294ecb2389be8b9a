"""The simulated vLLM 0.26 engine process: state, start/stop, simulated crash; ``running_engine`` and ``serve``.

In-process use (tests, ``up``, benchmarks)::

    async with running_engine(port=0, kv_events_endpoint="tcp://127.0.0.1:0", time_scale=1.0) as eng:
        eng.url                 # http://127.0.0.1:<port>
        eng.kv_events_endpoint  # tcp://127.0.0.1:<port> (None without a publisher)
        eng.endpoint            # llmd_kserve.types.Endpoint for routers

``serve(EngineOptions(...))`` runs one engine until SIGINT/SIGTERM (``llmd-kserve engine``). Options are the fields of
:class:`EngineOptions` (``engine_sim.options``); the endpoints are in ``engine_sim.routes``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import web

from llmd_kserve.aio import raise_fd_limit, run, stop_on_signals
from llmd_kserve.engine_sim import pd
from llmd_kserve.engine_sim.core import EngineCore
from llmd_kserve.engine_sim.driver import RealtimeDriver, Stream
from llmd_kserve.engine_sim.frontend import Frontend
from llmd_kserve.engine_sim.metrics import EngineMetrics
from llmd_kserve.engine_sim.openai_api import GenRequest
from llmd_kserve.engine_sim.options import EngineOptions, check_options
from llmd_kserve.engine_sim.publisher import KVEventPublisher
from llmd_kserve.engine_sim.routes import build_app
from llmd_kserve.errors import ConfigError
from llmd_kserve.http_errors import json_parser_errors
from llmd_kserve.latency import load_profile
from llmd_kserve.tokenizer import load_tokenizer
from llmd_kserve.types import Endpoint, EndpointId

__all__ = ["EngineOptions", "EngineServer", "running_engine", "serve"]

log = logging.getLogger(__name__)


class EngineServer:
    """One simulated engine served over HTTP on the real clock: core + real-time driver + metrics + optional
    KV-event publisher + aiohttp app. (The cluster simulator drives the same ``EngineCore`` on a virtual clock,
    without HTTP: ``cluster_sim.engines.VirtualReplica``.)"""

    def __init__(self, opts: EngineOptions) -> None:
        check_options(opts)
        self.opts = opts
        self.profile = load_profile(opts.profile)
        self.frontend = Frontend(self.profile)
        self.tok = load_tokenizer(opts.tokenizer)
        self.core = EngineCore(self.profile, num_blocks=opts.num_blocks, block_size=opts.block_size,
                               max_num_seqs=opts.max_num_seqs, max_num_batched_tokens=opts.max_num_batched_tokens,
                               max_model_len=opts.max_model_len, seed=opts.seed,
                               async_scheduling=opts.async_scheduling, vllm_version=opts.vllm_version)
        self.metrics = EngineMetrics(self.core, opts.model)
        self.rng = random.Random(opts.seed)
        self.engine_id = str(uuid.UUID(int=self.rng.getrandbits(128), version=4))
        self.publisher: KVEventPublisher | None = None
        self.driver: RealtimeDriver | None = None
        self.pull = pd.PullClient()
        self.port = opts.port
        self.n_requests = 0
        self.crashed = False
        self._seq = 0
        self._leases: dict[str, asyncio.TimerHandle] = {}
        self.transports: set[asyncio.BaseTransport] = set()
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._ready_at = 0.0

    # --- lifecycle ----------------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        host = self.opts.advertise_host or ("127.0.0.1" if self.opts.host in ("0.0.0.0", "", "::") else self.opts.host)
        return f"http://{host}:{self.port}"

    @property
    def kv_events_endpoint(self) -> str | None:
        return self.publisher.connect_endpoint if self.publisher else None

    @property
    def endpoint(self) -> Endpoint:
        return Endpoint(id=EndpointId(self.url), role=self.opts.role, kv_events=self.kv_events_endpoint,
                        kv_replay=self.publisher.replay_connect_endpoint if self.publisher else None)

    async def start(self) -> None:
        # handler_cancellation: a client that disconnects cancels its handler, which aborts its request (as vLLM does)
        self._runner = web.AppRunner(build_app(self), access_log=None, handle_signals=False, handler_cancellation=True)
        await self._runner.setup()
        json_parser_errors(self._runner)
        self._site = web.TCPSite(self._runner, self.opts.host, self.opts.port, reuse_address=True)
        try:
            await self._site.start()
        except OSError as exc:
            await self._runner.cleanup()
            self._runner = None
            raise ConfigError(f"cannot listen on {self.opts.host}:{self.opts.port}: {exc.strerror or exc}",
                              "port") from exc
        self.port = self._site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        if self.opts.kv_events_endpoint:
            topic = self.opts.kv_events_topic or f"kv@{self.url.removeprefix('http://')}@{self.opts.model}"
            self.publisher = KVEventPublisher(self.opts.kv_events_endpoint, topic,
                                              replay_endpoint=self.opts.kv_events_replay_endpoint)
            self.core.event_sink = self.publisher.publish
            self.core.pool.enable_events = True
        self.driver = RealtimeDriver(self.core, self.metrics, time_scale=self.opts.time_scale)
        self.driver.start()
        self._ready_at = time.monotonic() + self.opts.slow_start
        log.info("engine %s serving %s on %s (kv events %s)", self.engine_id[:8], self.opts.model, self.url,
                 self.kv_events_endpoint)

    async def stop(self) -> None:
        for h in self._leases.values():
            h.cancel()
        if self.driver is not None:
            await self.driver.stop()
        await self.pull.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self.publisher is not None:
            self.publisher.close()

    def crash(self) -> None:
        """Die like a killed pod: drop every connection and stop listening (or exit the process)."""
        if self.crashed:
            return
        self.crashed = True
        log.warning("engine %s: simulated crash after %d requests", self.url, self.n_requests)
        for t in list(self.transports):
            t.abort()
        if self.opts.crash_exits_process:
            os._exit(1)
        if self._site is not None:
            asyncio.get_running_loop().create_task(self._site.stop())

    def hang(self) -> None:
        """Fault: generation stops for good (a hung GPU or engine core); ``/health`` and ``/metrics`` still answer."""
        if self.driver is not None and not self.driver.hung:
            log.warning("engine %s: simulated hang after %d requests", self.url, self.n_requests - 1)
            self.driver.hung = True

    def ready(self) -> bool:
        """False while the simulated slow start lasts (``/health`` answers 503, generation too)."""
        return time.monotonic() >= self._ready_at

    # --- requests -----------------------------------------------------------------------------------------------
    def core_id(self, rid: str, i: int) -> str:
        """A fresh core request id for prompt ``i`` of request ``rid``."""
        self._seq += 1
        return f"{rid}-{i}-{self._seq}"

    def submit(self, core_id: str, prompt: list[int], req: GenRequest, **kw: Any) -> Stream:
        assert self.driver is not None
        return self.driver.submit(core_id, prompt, req.max_tokens, output_len=req.output_len, **kw)

    def abort(self, core_id: str, reason: str = "abort") -> None:
        """Stop a submitted request (client gone: ``abort``; stop string matched: ``stop``) and free its blocks."""
        assert self.driver is not None
        self.driver.abort(core_id, reason)

    def hold(self, core_id: str) -> None:
        """Keep a finished prefill's blocks for the lease, then free them."""
        delay = self.opts.kv_lease_s * max(self.opts.time_scale, 1e-3)
        self._leases[core_id] = asyncio.get_running_loop().call_later(delay, self.release, core_id)

    def release(self, core_id: str) -> None:
        """Free a held prefill's blocks now (pulled by the decode engine, or its lease ran out)."""
        h = self._leases.pop(core_id, None)
        if h is not None:
            h.cancel()
        self.core.release(core_id)


@asynccontextmanager
async def running_engine(port: int = 0, host: str = "127.0.0.1", *, options: EngineOptions | None = None,
                         **opts: Any) -> AsyncIterator[EngineServer]:
    """Start one engine in this event loop; stopped (connections closed, socket unbound) on exit. ``options``
    (an EngineOptions) or ``opts`` (its fields; an unknown name is a TypeError) say what to run."""
    eng = EngineServer(options if options is not None else EngineOptions(host=host, port=port, **opts))
    try:
        await eng.start()
        yield eng
    finally:
        await eng.stop()


def serve(options: EngineOptions) -> int:
    """Run one engine until SIGINT/SIGTERM (the ``llmd-kserve engine`` command)."""

    raise_fd_limit()

    async def main() -> None:
        stop = stop_on_signals()
        async with running_engine(options=options) as eng:
            where = "" if eng.url.endswith(f"//{eng.opts.host}:{eng.port}") else f" (listening on {eng.opts.host})"
            print(f"engine ready: {eng.url}{where} model={eng.opts.model} kv_events={eng.kv_events_endpoint}",
                  flush=True)
            await stop.wait()

    run(main())
    return 0
