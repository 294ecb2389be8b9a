"""The router's HTTP app: OpenAI routes, /health, /metrics, /debug; ``running_router`` (in-process) and ``serve``.

In-process use (tests, benchmarks, ``up``, demos)::

    async with running_router(endpoints=["http://127.0.0.1:8001#kv=tcp://127.0.0.1:5557"],
                              config="precise-prefix") as router:
        router.url            # http://127.0.0.1:<port>
        router.state          # RouterState: pool, scheduler, index, metrics, decisions ...
        router.state.set_endpoints([...])   # replace the pool (e.g. from Kubernetes discovery)
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import random
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import msgspec
from aiohttp import web

from llmd_kserve.aio import raise_fd_limit, run, stop_on_signals
from llmd_kserve.defaults import ROUTER_PORT
from llmd_kserve.errors import ConfigError, HTTPError, InvalidRequestError
from llmd_kserve.governance.gateway import Admission
from llmd_kserve.governance.keys import Forbidden, VirtualKey, legacy_key
from llmd_kserve.http_errors import Handler, error_response, json_parser_errors, openai_errors
from llmd_kserve.router.admin import AdminAPI
from llmd_kserve.router.endpoints import load_endpoints_file
from llmd_kserve.router.governance import Kind, ParsedRequest, request_id, validate_request
from llmd_kserve.router.metering import count_prompt, estimate, known_prompt_tokens, metered
from llmd_kserve.router.proxy import ANSWERED_KEY, STATUS_KEY
from llmd_kserve.router.state import DEFAULT_MAX_BODY_BYTES, RouterSettings, RouterState
from llmd_kserve.types import Endpoint, LLMRequest

log = logging.getLogger(__name__)
_encode = msgspec.json.Encoder().encode
STATE_KEY = web.AppKey("router_state", RouterState)
MAX_BODY_BYTES = DEFAULT_MAX_BODY_BYTES
PRINCIPAL_KEY: Any = web.RequestKey("llmd_principal", str) if hasattr(web, "RequestKey") else "llmd_principal"
KEY_KEY: Any = web.RequestKey("llmd_key", VirtualKey) if hasattr(web, "RequestKey") else "llmd_key"
OFFLOAD_BYTES = 256 * 1024
"""Bodies larger than this are decoded, checked and tokenized in a worker thread, off the event loop."""


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=_encode(data), status=status, content_type="application/json")


def _tokenize_and_limit(raw: bytes, kind: Kind, state: RouterState) -> tuple[ParsedRequest, tuple[int, ...] | None]:
    """Decode, validate, apply the limits; text that could exceed the token limit is tokenized and counted here
    (its ids go on to the scheduler, so they are computed once)."""
    gov = state.governance
    parsed = validate_request(raw, kind, state.models)
    gov.check_policy(parsed)
    if state.tokenizer is None or parsed.token_ids is not None or not gov.needs_token_count(parsed):
        return parsed, None
    tok = state.tokenizer
    body = parsed.body
    if kind == "chat":
        ids = [tuple(tok.encode(tok.apply_chat_template(body["messages"])))]
    else:
        prompt = body["prompt"]
        ids = [tuple(tok.encode(p)) for p in ([prompt] if isinstance(prompt, str) else prompt)]
    gov.check_prompt_tokens(parsed, sum(len(i) for i in ids))
    return parsed, ids[0]


_ids = random.Random()  # request ids: 128 random bits, seeded from the OS; uuid4's urandom call per request is not needed


async def _read_body(request: web.Request, timeout: float) -> bytes:
    if request.content.is_eof():  # the whole body came with the headers: no waiting, so no timer
        return await request.read()
    try:
        async with asyncio.timeout(timeout):
            return await request.read()
    except TimeoutError:
        raise InvalidRequestError(f"Request body not received within {timeout:g} s.", status=408,
                                  type_="RequestTimeoutError") from None


async def _openai(request: web.Request, kind: Kind, path: str) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    rid = f"{_ids.getrandbits(128):032x}"  # the router's own id: audit, decisions, metering and load key on it
    client_rid: str | None = None  # the client's x-request-id: forwarded and echoed, a label only
    try:
        client_rid = request_id(request.headers)
        principal = request.get(PRINCIPAL_KEY)
        raw = await _read_body(request, state.settings.body_timeout)
        big = len(raw) > OFFLOAD_BYTES
        if big:  # decoding, tokenizing and the gateway's text work on a big body would stall every other request
            parsed, token_ids = await asyncio.to_thread(_tokenize_and_limit, raw, kind, state)
        else:
            parsed, token_ids = _tokenize_and_limit(raw, kind, state)
        del raw
        token_ids = token_ids if token_ids is not None else parsed.token_ids
        if token_ids is None and state.render is not None:
            token_ids = await state.render.token_ids(parsed)
            state.governance.check_prompt_tokens(parsed, len(token_ids or ()))
        gw = state.gateway
        key = request.get(KEY_KEY)
        prompt_tokens = known_prompt_tokens(parsed, token_ids)
        if gw.active and prompt_tokens is None and metered(key) and state.tokenizer is not None:
            counted = (await asyncio.to_thread(count_prompt, parsed, state.tokenizer)
                       if parsed.prompt_chars > OFFLOAD_BYTES else count_prompt(parsed, state.tokenizer))
            if counted is not None:
                prompt_tokens, first_ids = counted
                token_ids = token_ids if token_ids is not None else first_ids  # the scheduler reuses them
        body = parsed.body
        session = request.headers.get("x-session-id") or body.get("user")
        llm_req = LLMRequest(request_id=rid, model=parsed.model or "", body=body, kind=kind, token_ids=token_ids,
                             max_tokens=parsed.max_tokens or 16,
                             session_id=session if isinstance(session, str) else None, headers=request.headers)
        gov = state.governance

        def on_scheduled(endpoint: str) -> None:
            gov.audit(rid, parsed, endpoint, principal, request.remote)

        assert state.proxy is not None
        if not gw.active:
            resp = await state.proxy.forward(request, path, parsed, llm_req, on_scheduled, client_request_id=client_rid)
        else:  # keys, limits, guardrails, flow control, audit trail (llmd_kserve.governance)
            adm = await gw.admit(key, rid, body, kind, parsed.model, request.remote, offload=big,
                                 client_request_id=client_rid, tokens=estimate(parsed, prompt_tokens))
            try:
                resp = await state.proxy.forward(request, path, parsed, llm_req, on_scheduled, admission=adm,
                                                 client_request_id=client_rid)
            except BaseException as exc:
                _finish_later(state, adm, exc.status if isinstance(exc, HTTPError) else request.get(ANSWERED_KEY, 499))
                raise
            await gw.finish(adm, resp.get(STATUS_KEY, resp.status), resp.headers.get("x-llmd-endpoint"))
    except HTTPError as exc:
        resp = error_response(exc, client_rid or rid)
        if exc.status == 408:
            resp.force_close()  # the rest of the body may still be on its way
    except asyncio.CancelledError:  # the client went away: 499 like a cut stream, unless its answer was complete
        state.metrics.request_count(path, str(request.get(ANSWERED_KEY, 499))).inc()
        raise
    state.metrics.request_count(path, str(resp.get(STATUS_KEY, resp.status))).inc()
    return resp


def _finish_later(state: RouterState, adm: Admission, status: int) -> None:
    """Free the flow-control slot now and settle tokens and write the ``done`` record in the background (the
    handler is unwinding)."""
    state.gateway.release(adm)
    state._spawn(state.gateway.finish(adm, status, None))


async def completions(request: web.Request) -> web.StreamResponse:
    return await _openai(request, "completion", "/v1/completions")


async def chat_completions(request: web.Request) -> web.StreamResponse:
    return await _openai(request, "chat", "/v1/chat/completions")


async def models(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    if state.settings.served_models:
        cards = [{"id": m, "object": "model", "owned_by": "llmd-kserve"} for m in state.settings.served_models]
    else:
        if not state.model_cards:  # engines not answering yet when the router started: ask again now
            await state.refresh_models()
        cards = list(state.model_cards)
    return _json({"object": "list", "data": cards})


async def health(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    states = state.endpoint_states()
    fresh = sum(1 for s in states if not s.metrics.stale)
    body: dict[str, Any] = {"status": "ok" if fresh else "no_healthy_endpoint", "endpoints": len(states),
                            "healthy": fresh}
    blind = state.kv_blind_endpoints()
    if blind:  # precise prefix routing without KV events for these: they are routed on the router-side estimate
        body["details"] = {"no_kv_events": blind, "prefix_fallback": "approx"}
    keys = state.gateway.keys
    if keys is not None and keys.path is not None:  # "stale": the file cannot be applied; the last good keys serve
        keys.maybe_reload()
        body["keys"] = keys.health()
    return _json(body, 200 if fresh else 503)


async def metrics(request: web.Request) -> web.Response:
    body, content_type = request.app[STATE_KEY].metrics.render()
    return web.Response(body=body, headers={"Content-Type": content_type})


async def debug_decisions(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    try:
        limit = int(request.query["limit"]) if "limit" in request.query else None
    except ValueError:
        return error_response(InvalidRequestError("'limit' must be an integer.", "limit"))
    return _json({"decisions": state.decisions.recent(limit, request.query.get("request_id"))})


async def debug_endpoints(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    out = []
    for s in state.endpoint_states():
        m = s.metrics
        out.append({"id": s.id, "role": s.endpoint.role, "kv_events": s.endpoint.kv_events,
                    "metrics": {f.name: getattr(m, f.name) for f in fields(m)}})
    return _json({"endpoints": out, "models": list(state.models),
                  "index_keys": len(state.index) if state.index is not None else None})


_OPENAI_ROUTES = frozenset({"/v1/completions", "/v1/chat/completions"})


def _operator_route(path: str) -> bool:
    """Routes for operators only: the admin API, ``/debug/*`` (every tenant's request ids and endpoints) and
    ``/metrics`` (every tenant's token counts)."""
    return path == "/metrics" or path.startswith(("/admin/", "/debug/"))


def _is_operator(state: RouterState, key: VirtualKey | None) -> bool:
    """An operator key: a virtual key with ``admin: true``, or a plain ``--api-keys-file`` token (``None``: a token
    checked by a plain token list)."""
    return key is None or key.admin or any(key.id == legacy_key(t).id for t in state.settings.api_keys if t)


def _authenticate(state: RouterState, request: web.Request) -> VirtualKey | None:
    """The request's key (``None``: a plain token checked by a token list), kept on the request with its principal;
    401 when it is missing, unknown or revoked."""
    if KEY_KEY not in request:
        found = state.gateway.authenticate(request.headers)
        request[PRINCIPAL_KEY] = found.id if found is not None else state.governance.authorize(request.headers)
        request[KEY_KEY] = found
    key: VirtualKey | None = request[KEY_KEY]
    return key


def _operator_id(state: RouterState, request: web.Request) -> str | None:
    """The operator key id of a request; 401 without a valid key, 403 for a tenant's key."""
    if not _is_operator(state, _authenticate(state, request)):
        raise Forbidden("This is a tenant key: /metrics, /debug/* and /admin/* need an operator key "
                        "(llmd-kserve keys add --admin).")
    principal: str | None = request.get(PRINCIPAL_KEY)
    return principal


@web.middleware
async def _require_key(request: web.Request, handler: Handler) -> web.StreamResponse:
    """With API keys configured, every route but ``/health`` needs one, and the operator routes an operator's
    (``/metrics`` and ``/debug/*`` name every tenant's requests and engines with their KV-event addresses)."""
    state = request.app[STATE_KEY]
    if request.path != "/health" and state.governance.auth is not None:
        try:
            if _operator_route(request.path):
                _operator_id(state, request)
            else:
                _authenticate(state, request)
        except HTTPError as exc:
            if request.path in _OPENAI_ROUTES:
                state.metrics.requests.labels(request.path, str(exc.status)).inc()
            return error_response(exc, "")
    return await handler(request)


def build_app(router_state: RouterState, listen_host: str | None = None) -> web.Application:
    """The aiohttp app; its startup/cleanup start and stop the router's background parts. ``listen_host``: the
    name the router listens on (the admin API accepts it as ``Host`` besides IP addresses and localhost)."""
    app = web.Application(client_max_size=router_state.settings.max_body_bytes,
                          middlewares=[openai_errors, _require_key])
    app[STATE_KEY] = router_state

    async def on_startup(_: web.Application) -> None:
        await router_state.start()

    async def on_cleanup(_: web.Application) -> None:
        await router_state.stop()

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    app.router.add_post("/v1/completions", completions)
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/debug/decisions", debug_decisions)
    app.router.add_get("/debug/endpoints", debug_endpoints)
    AdminAPI(lambda: router_state.reloader, lambda request: _operator_id(router_state, request),
             enabled=router_state.settings.admin, keys_configured=router_state.governance.auth is not None,
             listen_host=listen_host, body_timeout=router_state.settings.body_timeout).add_routes(app)
    return app


@dataclass(frozen=True, slots=True)
class RunningRouter:
    """A router serving on a real port inside the current event loop."""

    url: str
    state: RouterState
    app: web.Application


@contextlib.asynccontextmanager
async def running_router(host: str = "127.0.0.1", port: int = 0, *, endpoints: Sequence[str | Endpoint] = (),
                         endpoints_file: str | Path | None = None, state: RouterState | None = None,
                         **settings: Any) -> AsyncIterator[RunningRouter]:
    """Start a router in this event loop (``port=0``: a free port); ``settings`` are ``RouterSettings`` fields."""
    if state is None:
        state = RouterState.create(RouterSettings(**settings), endpoints, endpoints_file)
    app = build_app(state, host)
    s = state.settings
    # keepalive_timeout also bounds how long a connection may take to send its request headers (slowloris)
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None, keepalive_timeout=s.header_timeout,
                           shutdown_timeout=s.drain_timeout)
    await runner.setup()
    json_parser_errors(runner)
    try:
        site = web.TCPSite(runner, host, port, backlog=2048)
        try:
            await site.start()
        except OSError as exc:
            raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}", "port") from exc
        bound = runner.addresses[0]
        yield RunningRouter(url=f"http://{host}:{bound[1]}", state=state, app=app)
    finally:
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
    state = RouterState.create(s, endpoints or (), endpoints_file)

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
