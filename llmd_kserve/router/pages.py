"""The router's read-only pages: ``/v1/models``, ``/health`` (liveness), ``/ready`` (readiness), ``/metrics``, ``/debug/decisions``, ``/debug/endpoints``,
``/debug/sessions``."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import msgspec
from aiohttp import web

from llmd_kserve.control.runtime import Runtime
from llmd_kserve.control.sessions import describe_session
from llmd_kserve.errors import InvalidRequestError, NotFound
from llmd_kserve.http_errors import error_response

_encode = msgspec.json.Encoder().encode
STATE_KEY = web.AppKey("router_state", Runtime)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=_encode(data), status=status, content_type="application/json")


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
    keys = state.governance.gateway.keys
    if keys is not None and keys.path is not None:  # "stale": the file cannot be applied; the last good keys serve
        keys.maybe_reload()
        body["keys"] = keys.health()
    return _json(body, 200 if fresh else 503)


async def ready(request: web.Request) -> web.Response:
    """200 once this replica should get traffic (``control.readiness``: endpoints scraped, KV index warm), else 503
    with the reason and the endpoints it waits for."""
    verdict = request.app[STATE_KEY].ready()
    body: dict[str, Any] = {"status": verdict.reason}
    if verdict.waiting:
        body["waiting"] = list(verdict.waiting)
    return _json(body, 200 if verdict.ready else 503)


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
                    "metrics": {f.name: getattr(m, f.name) for f in fields(m)}, **state.stalls.describe(s.id)})
    return _json({"endpoints": out, "models": list(state.models),
                  "index_keys": len(state.index) if state.index is not None else None})


async def debug_sessions(request: web.Request) -> web.Response:
    """``/debug/sessions?session=ID[&agent=ID]``: a live session's home endpoint, turns and moves (404: not live)."""
    session = request.query.get("session")
    if not session:
        return error_response(InvalidRequestError("'session' is required.", "session"))
    found = describe_session(request.app[STATE_KEY].scheduler, session, request.query.get("agent") or None)
    if found is None:
        return error_response(NotFound(f"No live session {session!r}.", "session"))
    return _json(found)


def add_pages(app: web.Application) -> None:
    app.router.add_get("/v1/models", models)
    app.router.add_get("/health", health)
    app.router.add_get("/ready", ready)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/debug/decisions", debug_decisions)
    app.router.add_get("/debug/endpoints", debug_endpoints)
    app.router.add_get("/debug/sessions", debug_sessions)
