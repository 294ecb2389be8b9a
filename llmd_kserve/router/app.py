"""The router's HTTP app: OpenAI routes, /health, /ready, /metrics, /debug; ``running_router`` (in-process) and ``serve``.

In-process use (tests, benchmarks, ``up``, demos)::

    async with running_router(endpoints=["http://127.0.0.1:8001#kv=tcp://127.0.0.1:5557"],
                              config="precise-prefix") as router:
        router.url            # http://127.0.0.1:<port>
        router.state          # Runtime: pool, scheduler, index, metrics, decisions, governance ...
        router.state.set_endpoints([...])   # replace the pool (e.g. from Kubernetes discovery)
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
from aiohttp import web

from llmd_kserve.aio import raise_fd_limit, run, stop_on_signals
from llmd_kserve.control.director import Director, new_request_id
from llmd_kserve.control.endpoints import load_endpoints_file
from llmd_kserve.control.requests import RouteKind
from llmd_kserve.control.response_routing import place_response, recall_response, response_homes
from llmd_kserve.control.responses import RESPONSES_PATH
from llmd_kserve.control.runtime import Runtime
from llmd_kserve.control.settings import RouterSettings
from llmd_kserve.control.ticket import Identity, Ticket
from llmd_kserve.defaults import ROUTER_PORT
from llmd_kserve.errors import ConfigError, HTTPError
from llmd_kserve.governance.keys import Forbidden
from llmd_kserve.http_errors import Handler, error_response, json_parser_errors, openai_errors
from llmd_kserve.router.admin import AdminAPI
from llmd_kserve.router.answer import AioAnswer, Answer
from llmd_kserve.router.lean_server import LeanServer
from llmd_kserve.router.pages import STATE_KEY, add_pages
from llmd_kserve.router.proxy import Proxy
from llmd_kserve.router.timeouts import UpstreamTimeouts
from llmd_kserve.types import Endpoint, EndpointId

log = logging.getLogger(__name__)
_encode = msgspec.json.Encoder().encode
DIRECTOR_KEY = web.AppKey("router_director", Director)
PROXY_KEY = web.AppKey("router_proxy", Proxy)
IDENTITY_KEY: Any = web.RequestKey("llmd_identity", tuple) if hasattr(web, "RequestKey") else "llmd_identity"
"""(virtual key, principal) of a request, once the key middleware checked it."""


class OpenAIRoutes:
    """``POST /v1/completions``, ``/v1/chat/completions`` and ``/v1/responses``: read the body →
    ``Director.admit`` → ``Proxy.forward`` (schedule, send, relay) → ``Director.settle``, under either HTTP
    server."""

    def __init__(self, state: Runtime, director: Director, proxy: Proxy) -> None:
        self.state, self.director, self.proxy = state, director, proxy
        self.response_homes = response_homes(state)
        """Which endpoint stored each response (``previous_response_id`` goes there)."""
        self.by_path: dict[str, Handler] = {"/v1/completions": self.completions,
                                            "/v1/chat/completions": self.chat_completions,
                                            RESPONSES_PATH: self.responses}

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._aiohttp(request, "completion", "/v1/completions")

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        return await self._aiohttp(request, "chat", "/v1/chat/completions")

    async def responses(self, request: web.Request) -> web.StreamResponse:
        return await self._aiohttp(request, "responses", RESPONSES_PATH)

    async def _aiohttp(self, request: web.Request, kind: RouteKind, path: str) -> web.StreamResponse:
        answer = AioAnswer(request)
        await self.serve(answer, kind, path, request.get(IDENTITY_KEY))
        return answer.response if answer.response is not None else web.Response(status=499)

    async def serve(self, answer: Answer, kind: RouteKind, path: str, identity: Identity | None = None) -> None:
        """One OpenAI request from its body to its answer's end (an ``HTTPError`` answered as OpenAI JSON)."""
        director, metrics = self.director, self.state.metrics
        ticket: Ticket | None = None
        try:
            settings = self.state.settings
            raw = await answer.body(settings.body_timeout, settings.max_body_bytes)
            ticket = await director.admit(answer.headers, raw, kind, answer.client, identity=identity)
            del raw
            if kind == "responses":
                await recall_response(self.response_homes, self.state, ticket)
                place_response(self.response_homes, self.state, ticket)
            await self.proxy.forward(answer, path, ticket)
        except HTTPError as exc:
            answer.error(exc, ticket.label if ticket is not None else new_request_id())
        except BaseException as exc:  # the client went away (499 like a cut stream, unless its answer was complete)
            status = answer.answered or 499
            if ticket is not None:
                director.settle(ticket, status)  # its audit and metering finish in the background
            if isinstance(exc, asyncio.CancelledError):
                metrics.request_count(path, str(status)).inc()
            raise
        status = answer.status
        metrics.request_count(path, str(status)).inc()
        if ticket is not None:
            served = answer.endpoint
            pending = director.settle(ticket, status, served=EndpointId(served) if served else None)
            if pending is not None:  # the audit record is written before the answer ends (a client gone keeps it)
                await asyncio.shield(pending)

    def dispatcher(self, app: web.Application) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        """The server's request handler: a plain ``POST`` to an OpenAI route, while no API keys are configured,
        goes straight to its handler (under the same error answers); everything else (other routes, methods,
        query strings, ``Expect``, keys) through the app's URL dispatch and middlewares."""
        by_path, gov, slow = self.by_path, self.state.governance, app._handle

        async def dispatch(request: web.Request) -> web.StreamResponse:
            if request.method == "POST" and gov.auth is None and "Expect" not in request.headers:
                handler = by_path.get(request.raw_path)
                if handler is not None:
                    return await openai_errors(request, handler)
            return await slow(request)

        return dispatch


ROUTES_KEY = web.AppKey("router_openai_routes", OpenAIRoutes)


_OPENAI_ROUTES = frozenset({"/v1/completions", "/v1/chat/completions", RESPONSES_PATH})


_PROBES = frozenset({"/health", "/ready"})


def _operator_route(path: str) -> bool:
    """Routes for operators only: the admin API, ``/debug/*`` (every tenant's request ids and endpoints) and
    ``/metrics`` (every tenant's token counts)."""
    return path == "/metrics" or path.startswith(("/admin/", "/debug/"))


def _identity(request: web.Request) -> Identity:
    """The request's (key, principal), kept on the request; 401 when it has no valid key."""
    if IDENTITY_KEY not in request:
        request[IDENTITY_KEY] = request.app[DIRECTOR_KEY].authenticate(request.headers)
    identity: Identity = request[IDENTITY_KEY]
    return identity


def _operator_id(request: web.Request) -> str | None:
    """The operator key id of a request; 401 without a valid key, 403 for a tenant's key."""
    key, principal = _identity(request)
    if not request.app[DIRECTOR_KEY].governance.is_operator(key):
        raise Forbidden("This is a tenant key: /metrics, /debug/* and /admin/* need an operator key "
                        "(llmd-kserve keys add --admin).")
    return principal


@web.middleware
async def _require_key(request: web.Request, handler: Handler) -> web.StreamResponse:
    """With API keys configured, every route but ``/health`` and ``/ready`` (the probes) needs one, and the operator
    routes an operator's (``/metrics`` and ``/debug/*`` name every tenant's requests and engines with their KV-event
    addresses)."""
    state = request.app[STATE_KEY]
    if request.path not in _PROBES and state.governance.auth is not None:
        try:
            if _operator_route(request.path):
                _operator_id(request)
            else:
                _identity(request)
        except HTTPError as exc:
            if request.path in _OPENAI_ROUTES:
                state.metrics.requests.labels(request.path, str(exc.status)).inc()
            return error_response(exc, "")
    return await handler(request)


def build_app(router_state: Runtime, listen_host: str | None = None) -> web.Application:
    """The aiohttp app; its startup/cleanup start and stop the router's background parts. ``listen_host``: the
    name the router listens on (the admin API accepts it as ``Host`` besides IP addresses and localhost)."""
    s = router_state.settings
    app = web.Application(client_max_size=s.max_body_bytes, middlewares=[openai_errors, _require_key])
    app[STATE_KEY] = router_state
    director = app[DIRECTOR_KEY] = Director(router_state)
    profile = router_state.scheduler.current.ctx.profile  # the latency model, if any
    proxy = app[PROXY_KEY] = Proxy(
        director, max_attempts=s.max_attempts, forward_authorization=not s.api_keys,
        inject_stream_usage=s.inject_stream_usage,
        timeouts=UpstreamTimeouts(s.connect_timeout, s.first_byte_timeout, s.idle_timeout),
        kv_transfer_time=profile.kv_transfer_time if profile is not None else None)

    async def on_startup(_: web.Application) -> None:
        await router_state.start()

    async def on_cleanup(_: web.Application) -> None:
        await router_state.stop()

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    routes = app[ROUTES_KEY] = OpenAIRoutes(router_state, director, proxy)
    app.router.add_post("/v1/completions", routes.completions)
    app.router.add_post("/v1/chat/completions", routes.chat_completions)
    app.router.add_post(RESPONSES_PATH, routes.responses)
    add_pages(app)
    AdminAPI(lambda: router_state.reloader, _operator_id,
             enabled=router_state.settings.admin, keys_configured=router_state.governance.auth is not None,
             listen_host=listen_host, body_timeout=router_state.settings.body_timeout).add_routes(app)
    return app


@dataclass(frozen=True, slots=True)
class RunningRouter:
    """A router serving on a real port inside the current event loop."""

    url: str
    state: Runtime
    app: web.Application

    @property
    def director(self) -> Director:
        return self.app[DIRECTOR_KEY]

    @property
    def proxy(self) -> Proxy:
        return self.app[PROXY_KEY]


@contextlib.asynccontextmanager
async def running_router(host: str = "127.0.0.1", port: int = 0, *, endpoints: Sequence[str | Endpoint] = (),
                         endpoints_file: str | Path | None = None, state: Runtime | None = None,
                         **settings: Any) -> AsyncIterator[RunningRouter]:
    """Start a router in this event loop (``port=0``: a free port); ``settings`` are ``RouterSettings`` fields."""
    if state is None:
        state = Runtime.build(RouterSettings(**settings), endpoints, endpoints_file)
    app = build_app(state, host)
    s = state.settings
    # keepalive_timeout also bounds how long a connection may take to send its request headers (slowloris)
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None, keepalive_timeout=s.header_timeout,
                           shutdown_timeout=s.drain_timeout)
    await runner.setup()
    json_parser_errors(runner)
    assert runner.server is not None
    runner.server.request_handler = app[ROUTES_KEY].dispatcher(app)  # type: ignore[assignment]  # web.Request
    lean: LeanServer | None = None
    listener: asyncio.Server | None = None
    try:
        try:
            if s.http_server == "lean":
                lean = LeanServer(app[ROUTES_KEY].serve, runner.server,
                                  keys_configured=lambda: state.governance.auth is not None,
                                  header_timeout=s.header_timeout, body_timeout=s.body_timeout,
                                  max_body_bytes=s.max_body_bytes)
                listener = await asyncio.get_running_loop().create_server(lean, host, port, backlog=2048)
                bound = listener.sockets[0].getsockname()
            else:
                site = web.TCPSite(runner, host, port, backlog=2048)
                await site.start()
                bound = runner.addresses[0]
        except OSError as exc:
            raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}", "port") from exc
        yield RunningRouter(url=f"http://{host}:{bound[1]}", state=state, app=app)
    finally:
        if listener is not None and lean is not None:
            listener.close()  # no new connections; requests in flight get the drain time
            await lean.shutdown(s.drain_timeout)
        await runner.cleanup()


def serve(settings: RouterSettings, *, host: str = "127.0.0.1", port: int = ROUTER_PORT,
          endpoints: Sequence[str] | None = None, endpoints_file: str | None = None,
          discover_selector: str | None = None, discover_namespace: str | None = None) -> int:
    """Run the router until SIGINT/SIGTERM (blocking; ``llmd-kserve router``).

    Endpoints come from a list, a watched file, or Kubernetes pod discovery (``discover_selector``), which
    starts with an empty pool and follows pods as they become ready or leave.
    """
    if not endpoints and not endpoints_file and not discover_selector:
        raise ConfigError("give --endpoints URL[,URL...], --endpoints-file FILE or --discover-selector", "endpoints")
    if not 0 <= port <= 65535:
        raise ConfigError(f"must be 0..65535, got {port}", "port")
    s = settings
    if endpoints_file:
        load_endpoints_file(endpoints_file)  # a missing or bad file fails now, not silently as an empty pool
    state = Runtime.build(s, endpoints or (), endpoints_file)

    raise_fd_limit()

    async def main() -> None:
        stop = stop_on_signals()
        async with running_router(host, port, state=state) as router:
            discovery = None
            if discover_selector:
                from llmd_kserve.kube.discovery import watch_endpoints

                def apply(eps: list[Endpoint]) -> None:
                    state.set_endpoints(eps)

                def stop_on_failure(t: asyncio.Task[None]) -> None:
                    if not t.cancelled() and t.exception() is not None:
                        stop.set()

                discovery = asyncio.create_task(watch_endpoints(
                    apply, selector=discover_selector, namespace=discover_namespace))
                discovery.add_done_callback(stop_on_failure)
            gc.freeze()  # startup objects out of the collector's way: shorter GC pauses on the request path
            print(f"llmd-kserve router listening on {router.url} (config {s.config}, "
                  f"{len(state.pool.snapshot)} endpoints)", flush=True)
            await stop.wait()
            if discovery is None or not discovery.done():  # a signal, not a failed discovery
                log.warning("stopping: draining in-flight requests for up to %g s (signal again to exit now)",
                            s.drain_timeout)
            if discovery is not None:
                failure = discovery.exception() if discovery.done() and not discovery.cancelled() else None
                if failure is not None:
                    raise failure  # e.g. ClusterError: RBAC denied watching pods
                discovery.cancel()

    run(main())
    return 0
