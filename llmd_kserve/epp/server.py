"""The EPP process: ext_proc + gRPC health on one port, Prometheus metrics on another, graceful drain.

In-process use (tests, benchmarks, ``up --gateway envoy``)::

    async with running_epp(endpoints=["http://127.0.0.1:8001#kv=tcp://127.0.0.1:5557"], config="default") as epp:
        epp.grpc_address    # 127.0.0.1:<port>: point Envoy's ext_proc cluster here
        epp.metrics_url     # http://127.0.0.1:<port>/metrics
        epp.state           # the Runtime the scheduler, KV index, scraper and governance live in

Health (gRPC Health Checking Protocol): ``liveness`` is SERVING while the process answers; ``readiness`` and
``envoy.service.ext_proc.v3.ExternalProcessor`` are SERVING while the pool has an endpoint and the EPP is not
draining. On SIGTERM the EPP drains: readiness goes NOT_SERVING, open streams get ``drain_timeout`` to finish.

Hot standby (``EppSettings.lease``): every replica runs the whole data path (KV events, metrics scraping, discovery)
but only the holder of a ``coordination.k8s.io`` Lease (:mod:`llmd_kserve.kube.leader`) is ready and serves picks;
a standby reports readiness NOT_SERVING and refuses a stream (UNAVAILABLE) that reaches it anyway. A leader that
drains gives the Lease up, so its standby takes over at its next retry.

Admission is the director's (``control.director``), as behind the HTTP router: keys, limits (prompt characters and
tokens, batch size), rate limits and budgets, flow control, guardrails and the audit trail (``RouterSettings``); a
body over the offload size is decoded, checked and tokenized in a worker thread, so one big prompt does not stall
the other streams. A scheduler config file is watched and reloaded without a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import msgspec
from aiohttp import web
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from llmd_kserve.control.director import OFFLOAD_BYTES, Director
from llmd_kserve.control.runtime import Runtime
from llmd_kserve.control.settings import DEFAULT_MAX_BODY_BYTES, RouterSettings
from llmd_kserve.epp.exchange import RESPONSE_MODES, Exchange, ResponseMode
from llmd_kserve.epp.http_pick import HttpPick
from llmd_kserve.epp.metrics import EppMetrics
from llmd_kserve.epp.picker import EndpointPicker, Saturation
from llmd_kserve.epp.protocol import EXT_PROC_SERVICE
from llmd_kserve.epp.standby import Standby
from llmd_kserve.errors import ConfigError
from llmd_kserve.kube.leader import LeaseSettings
from llmd_kserve.types import Endpoint

log = logging.getLogger(__name__)
_encode = msgspec.json.Encoder().encode
READINESS, LIVENESS = "readiness", "liveness"


@dataclass(frozen=True, slots=True)
class EppSettings:
    """What ``llmd-kserve epp`` can be told besides the scheduler's own settings (``RouterSettings``)."""

    response_mode: ResponseMode = "full"
    saturation: Saturation = Saturation()
    drain_timeout: float = 30.0
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    lease: LeaseSettings | None = None
    """Leader election (hot standby): serve picks only while holding this Lease (None: always serve)."""
    handover_s: float = 1.0
    """A leader that drains releases the Lease but stays ready until a standby holds it, then this long more (so
    the gateway's health checks see the new leader before this one goes), at most ``lease.renew_deadline`` in all."""

    def __post_init__(self) -> None:
        if self.response_mode not in RESPONSE_MODES:
            raise ConfigError(f"must be one of {', '.join(RESPONSE_MODES)}, got {self.response_mode!r}", "response_mode")
        if self.handover_s < 0:
            raise ConfigError(f"must be >= 0, got {self.handover_s}", "handover_s")
        if self.drain_timeout < 0:
            raise ConfigError(f"must be >= 0, got {self.drain_timeout}", "drain_timeout")
        if self.max_body_bytes < 1:
            raise ConfigError(f"must be >= 1, got {self.max_body_bytes}", "max_body_bytes")


class ExtProcService(pb_grpc.ExternalProcessorServicer):
    """``envoy.service.ext_proc.v3.ExternalProcessor/Process``: one :class:`Exchange` per stream."""

    def __init__(self, picker: EndpointPicker, settings: EppSettings, metrics: EppMetrics,
                 serving: Callable[[], bool] = lambda: True) -> None:
        self.picker, self.settings, self.metrics, self.serving = picker, settings, metrics, serving
        self.active = 0
        self.idle = asyncio.Event()
        self.idle.set()

    async def Process(self, request_iterator: AsyncIterator[pb.ProcessingRequest],  # noqa: N802 - gRPC name
                      context: grpc.aio.ServicerContext) -> None:
        if not self.serving():  # a standby: the gateway should not have sent it here (readiness is NOT_SERVING)
            self.metrics.stream_errors.labels("standby").inc()
            await context.abort(grpc.StatusCode.UNAVAILABLE, "standby Endpoint Picker: not the leader")
        waits = not self.picker.director.admits_synchronously  # governance may wait (flow control, audit)
        ex = Exchange(self.picker, response_mode=self.settings.response_mode,
                      max_body_bytes=self.settings.max_body_bytes, offload_bytes=0 if waits else OFFLOAD_BYTES)
        self.active += 1
        self.idle.clear()
        self.metrics.streams.inc()
        self.metrics.active_streams.inc()
        cancelled = False
        read, write, eof = context.read, context.write, grpc.aio.EOF
        try:
            while (req := await read()) is not eof:  # read() skips the request iterator's async generator
                for resp in ex.handle(req):
                    await write(resp)
                if ex.admission_due:  # a big body, or governance that may wait: admitted without blocking the loop
                    answer = await self.picker.admit(ex.headers, ex.body)
                    for resp in ex.admitted(answer):
                        await write(resp)
        except asyncio.CancelledError:
            cancelled = True
            raise
        except Exception:
            self.metrics.stream_errors.labels("exception").inc()
            log.exception("ext_proc stream failed")
            raise
        finally:
            ex.close(cancelled=cancelled)
            self.active -= 1
            self.metrics.active_streams.dec()
            if not self.active:
                self.idle.set()


class EppServer:
    """The gRPC server (ext_proc + health) and the metrics HTTP app around one :class:`Runtime` (built with
    ``metrics=EppMetrics()``: :func:`epp_runtime`)."""

    def __init__(self, state: Runtime, settings: EppSettings | None = None, lease_api: Any = None) -> None:
        """``lease_api``: a ``CoordinationV1Api`` (or the fake's) for ``settings.lease``."""
        if not isinstance(state.metrics, EppMetrics):
            raise ConfigError("build the EPP's runtime with epp_runtime() (its metrics are EppMetrics)", "metrics")
        self.state = state
        self.settings = settings or EppSettings()
        self.metrics: EppMetrics = state.metrics
        self.picker = EndpointPicker(Director(state), saturation=self.settings.saturation)
        self.service = ExtProcService(self.picker, self.settings, self.metrics, lambda: self.leading)
        self.health = health.aio.HealthServicer()
        self.draining = False
        self._server: grpc.aio.Server | None = None
        self._runner: web.AppRunner | None = None
        self._pick_runner: web.AppRunner | None = None
        self.http_pick: HttpPick | None = None
        self._ready_task: asyncio.Task[None] | None = None
        self.grpc_port = self.metrics_port = self.pick_port = 0
        self._stopped = False
        self._state_started = False
        self.standby: Standby | None = None
        if self.settings.lease is not None:
            if lease_api is None:
                raise ConfigError("leader election needs the Kubernetes API (lease_api)", "lease_api")
            self.standby = Standby(lease_api, self.settings.lease, self.metrics, self._refresh_ready,
                                   self.settings.handover_s)
        self.metrics.leader.set(1 if self.leading else 0)

    @property
    def leading(self) -> bool:
        """Whether this replica serves picks now (the leader, or no leader election)."""
        return self.standby is None or self.standby.serving

    def _refresh_ready(self) -> None:
        if self._server is not None and not self._stopped:
            asyncio.get_running_loop().create_task(self._set_ready())

    def ready(self) -> bool:
        return bool(self.state.pool.snapshot) and not self.draining and self.leading

    async def _set_ready(self) -> None:
        ready = self.ready()
        status = health_pb2.HealthCheckResponse.SERVING if ready else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in (READINESS, EXT_PROC_SERVICE, ""):
            await self.health.set(name, status)

    async def _readiness_loop(self) -> None:
        while True:
            await self._set_ready()
            await asyncio.sleep(0.5)

    async def start(self, host: str = "127.0.0.1", grpc_port: int = 9002, metrics_port: int | None = 9090,
                    pick_port: int | None = None) -> None:
        """Bind the ports (``pick_port``: also the HTTP pick, :mod:`llmd_kserve.epp.http_pick`), then start the
        runtime (scraper, KV subscriber) and serve; cleans up if any step fails."""
        try:
            await self._start(host, grpc_port, metrics_port, pick_port)
        except BaseException:
            await self.stop(0)
            raise

    async def _start(self, host: str, grpc_port: int, metrics_port: int | None, pick_port: int | None) -> None:
        # no SO_REUSEPORT: a second EPP on a busy port must fail, not silently share it
        server = grpc.aio.server(options=[("grpc.max_receive_message_length", 8 << 20),
                                          ("grpc.max_send_message_length", 8 << 20), ("grpc.so_reuseport", 0)])
        pb_grpc.add_ExternalProcessorServicer_to_server(self.service, server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        try:
            self.grpc_port = server.add_insecure_port(f"{host}:{grpc_port}")
        except RuntimeError:
            raise ConfigError(f"cannot listen on {host}:{grpc_port} (in use?)", "grpc_port") from None
        self._server = server
        if metrics_port is not None:
            self._runner = web.AppRunner(self._metrics_app(), access_log=None)
            await self._runner.setup()
            site = web.TCPSite(self._runner, host, metrics_port)
            try:
                await site.start()
            except OSError as exc:
                raise ConfigError(f"cannot listen on {host}:{metrics_port}: {exc.strerror or exc}",
                                  "metrics_port") from exc
            self.metrics_port = self._runner.addresses[0][1]
        if pick_port is not None:
            self.http_pick = HttpPick(self.picker, serving=lambda: self.leading)
            self._pick_runner = web.AppRunner(self.http_pick.app(), access_log=None)
            await self._pick_runner.setup()
            try:
                await web.TCPSite(self._pick_runner, host, pick_port).start()
            except OSError as exc:
                raise ConfigError(f"cannot listen on {host}:{pick_port}: {exc.strerror or exc}", "pick_port") from exc
            self.pick_port = self._pick_runner.addresses[0][1]
        await self.state.start()
        self._state_started = True
        await server.start()
        await self.health.set(LIVENESS, health_pb2.HealthCheckResponse.SERVING)
        await self._set_ready()
        self._ready_task = asyncio.create_task(self._readiness_loop())
        if self.standby is not None:
            self.standby.start()

    def _metrics_app(self) -> web.Application:
        app = web.Application()

        async def metrics(_: web.Request) -> web.Response:
            body, content_type = self.metrics.render()
            return web.Response(body=body, headers={"Content-Type": content_type})

        async def healthz(_: web.Request) -> web.Response:
            ok = self.ready()
            return web.Response(body=_encode({"status": "ok" if ok else "not_ready", "draining": self.draining,
                                              "leader": self.leading,
                                              "endpoints": len(self.state.pool.snapshot),
                                              "active_streams": self.service.active}),
                                status=200 if ok else 503, content_type="application/json")

        async def decisions(request: web.Request) -> web.Response:
            limit = request.query.get("limit")
            items = self.state.decisions.recent(int(limit) if limit and limit.isdigit() else None,
                                                request.query.get("request_id"))
            return web.Response(body=_encode({"decisions": items}), content_type="application/json")

        app.router.add_get("/metrics", metrics)
        app.router.add_get("/health", healthz)
        app.router.add_get("/debug/decisions", decisions)
        return app

    async def drain(self, timeout: float | None = None) -> bool:
        """Stop being ready and wait (up to ``timeout``) for open streams to end; True when none is left. A leader
        first hands over: it releases the Lease and keeps serving until a standby holds it
        (:meth:`Standby.handover <llmd_kserve.epp.standby.Standby.handover>`)."""
        if self.standby is not None:
            await self.standby.handover()
        self.draining = True
        await self._set_ready()
        try:
            await asyncio.wait_for(self.service.idle.wait(), self.settings.drain_timeout if timeout is None else timeout)
            return True
        except TimeoutError:
            log.warning("drain: %d stream(s) still open after the timeout", self.service.active)
            return False

    async def stop(self, grace: float = 1.0) -> None:
        """Stop serving (idempotent): gRPC with ``grace`` seconds for open streams, metrics, then the runtime."""
        if self._stopped:
            return
        self._stopped = True
        if self.standby is not None:
            await self.standby.stop()
        if self._ready_task is not None:
            self._ready_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ready_task
        if self._server is not None:
            await self._server.stop(grace)
        for runner in (self._runner, self._pick_runner):
            if runner is not None:
                await runner.cleanup()
        if self._state_started:
            await self.state.stop()


def epp_runtime(settings: RouterSettings, endpoints: Sequence[str | Endpoint] = (),
                endpoints_file: str | Path | None = None, response_mode: ResponseMode = "full",
                http_pick: bool = False) -> Runtime:
    """The EPP's runtime: fixed-rate metrics polling (in ``headers`` mode it does not see answers end), EPP metrics;
    attempts are watched for stalls in ``full`` mode (there it sees each answer begin), unless the HTTP pick is
    served too (it never sees an answer)."""
    return Runtime.build(settings, endpoints, endpoints_file, adaptive_scrape=False, metrics=EppMetrics(),
                         sees_answers=response_mode == "full" and not http_pick)


@dataclass(frozen=True, slots=True)
class RunningEpp:
    grpc_address: str
    metrics_url: str | None
    server: EppServer
    pick_address: str | None = None
    """``host:port`` of the HTTP pick (``pick_port`` given), for Envoy's ``ext_authz``."""

    @property
    def state(self) -> Runtime:
        return self.server.state


@contextlib.asynccontextmanager
async def running_epp(host: str = "127.0.0.1", grpc_port: int = 0, metrics_port: int | None = 0, *,
                      pick_port: int | None = None,
                      endpoints: Sequence[str | Endpoint] = (), endpoints_file: str | Path | None = None,
                      epp: EppSettings | None = None, lease_api: Any = None,
                      **settings: Any) -> AsyncIterator[RunningEpp]:
    """Start an EPP in this event loop (port 0: a free port); ``settings`` are ``RouterSettings`` fields;
    ``lease_api`` for ``epp.lease`` (leader election)."""
    server = EppServer(epp_runtime(RouterSettings(**settings), endpoints, endpoints_file,
                                   epp.response_mode if epp is not None else "full", pick_port is not None), epp,
                       lease_api)
    try:
        await server.start(host, grpc_port, metrics_port, pick_port)
        yield RunningEpp(f"{host}:{server.grpc_port}",
                         f"http://{host}:{server.metrics_port}" if metrics_port is not None else None, server,
                         f"{host}:{server.pick_port}" if pick_port is not None else None)
    finally:
        await server.stop(0)
