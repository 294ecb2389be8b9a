"""The simulated engine's aiohttp app: its routes and the handler of each endpoint (generation runs in ``serving``)."""

from __future__ import annotations

import logging
import time
import uuid
from typing import TYPE_CHECKING, Any

import msgspec
from aiohttp import web
from prometheus_client.exposition import gzip_accepted

from llmd_kserve.engine_sim import pd
from llmd_kserve.engine_sim.metrics import CONTENT_TYPE
from llmd_kserve.engine_sim.openai_api import (
    GenRequest,
    NotFoundError,
    chat_prompt,
    json_bytes,
    parse_generate,
    render_body,
)
from llmd_kserve.engine_sim.responses import ResponsesAPI
from llmd_kserve.engine_sim.serving import generate
from llmd_kserve.errors import HTTPError, InvalidRequestError, NotFound
from llmd_kserve.http_errors import error_response, openai_errors

if TYPE_CHECKING:
    from llmd_kserve.engine_sim.server import EngineServer

log = logging.getLogger(__name__)
ENGINE: web.AppKey[EngineServer] = web.AppKey("engine")
_decode_json = msgspec.json.Decoder()


def build_app(eng: EngineServer) -> web.Application:
    """The engine's app: vLLM's endpoints, answered from ``eng``."""
    app = web.Application(client_max_size=64 * 1024 * 1024, middlewares=[openai_errors])
    app[ENGINE] = eng
    r = app.router
    r.add_post("/v1/completions", h_completions)
    r.add_post("/v1/chat/completions", h_chat)
    r.add_post("/v1/responses", ResponsesAPI(eng).handle)
    r.add_post("/v1/completions/render", h_render_completions)
    r.add_post("/v1/chat/completions/render", h_render_chat)
    r.add_get("/v1/models", h_models)
    r.add_get("/health", h_health)
    r.add_get("/ping", h_health)
    r.add_get("/version", h_version)
    r.add_get("/metrics", h_metrics)
    r.add_post("/tokenize", h_tokenize)
    r.add_post("/detokenize", h_detokenize)
    r.add_post("/reset_prefix_cache", h_reset)
    r.add_post(pd.PULL_PATH, h_pull)
    return app


# --- helpers ----------------------------------------------------------------------------------------------------
def _ok(body: Any, rid: str | None = None) -> web.Response:
    return web.Response(body=json_bytes(body), content_type="application/json",
                        headers={"x-request-id": rid} if rid else None)


async def _json(request: web.Request) -> Any:
    try:
        return _decode_json.decode(await request.read())
    except msgspec.DecodeError as exc:
        raise InvalidRequestError(f"JSON decode error: {exc}") from exc
    except RecursionError:
        raise InvalidRequestError("JSON decode error: nested too deeply") from None


def _request_id(request: web.Request) -> str | None:
    """The client's ``x-request-id`` (at most 128 printable ASCII characters, else 400)."""
    value = request.headers.get("x-request-id")
    if value and (len(value) > 128 or not (value.isascii() and value.isprintable())):
        raise InvalidRequestError("'x-request-id' must be 1-128 printable ASCII characters.", param="x-request-id")
    return value or None


async def _parse(request: web.Request, kind: str) -> GenRequest:
    eng = request.app[ENGINE]
    return parse_generate(await _json(request), kind, model=eng.opts.model, tok=eng.tok,  # type: ignore[arg-type]
                          max_model_len=eng.core.max_model_len, default_output_len=eng.opts.default_output_len)


# --- generation -------------------------------------------------------------------------------------------------
async def h_completions(request: web.Request) -> web.StreamResponse:
    return await _generate(request, "completion")


async def h_chat(request: web.Request) -> web.StreamResponse:
    return await _generate(request, "chat")


async def _generate(request: web.Request, kind: str) -> web.StreamResponse:
    eng = request.app[ENGINE]
    try:
        base = _request_id(request) or uuid.uuid4().hex[:16]
    except InvalidRequestError as exc:
        return error_response(exc)
    rid = ("cmpl-" if kind == "completion" else "chatcmpl-") + base
    if not eng.ready():
        return error_response(HTTPError("engine is starting", status=503, type_="ServiceUnavailable"), base)
    eng.n_requests += 1
    if eng.opts.crash_after is not None and eng.n_requests > eng.opts.crash_after:
        eng.crash()
        if request.transport is not None:
            request.transport.abort()  # this connection dies with the pod too
        raise web.HTTPServiceUnavailable()
    if eng.opts.hang_after is not None and eng.n_requests > eng.opts.hang_after:
        eng.hang()
    try:
        req = await _parse(request, kind)
        if eng.opts.error_rate > 0 and eng.rng.random() < eng.opts.error_rate:
            raise HTTPError("simulated engine failure")
    except HTTPError as exc:
        return error_response(exc, base)
    eng.transports.add(request.transport)  # type: ignore[arg-type]
    try:
        return await generate(eng, request, req, rid, base)
    except HTTPError as exc:
        return error_response(exc, base)
    finally:
        eng.transports.discard(request.transport)  # type: ignore[arg-type]


# --- other endpoints (an HTTPError they raise is answered by the ``openai_errors`` middleware) ----------------------
async def h_pull(request: web.Request) -> web.Response:
    eng = request.app[ENGINE]
    body = await _json(request)
    if not isinstance(body, dict):
        raise InvalidRequestError("request body must be a JSON object")
    cid = body.get("remote_request_id")
    if body.get("remote_engine_id") != eng.engine_id or cid not in eng.core.held:
        raise NotFound("unknown or expired remote request")
    blocks = eng.core.held_blocks(cid) or []
    eng.release(cid)
    return _ok({"num_blocks": len(blocks), "block_size": eng.core.block_size})


async def h_render_completions(request: web.Request) -> web.Response:
    req = await _parse(request, "completion")
    rid = "cmpl-" + uuid.uuid4().hex[:16]
    return _ok([render_body(req, rid, p) for p in req.prompts])


async def h_render_chat(request: web.Request) -> web.Response:
    req = await _parse(request, "chat")
    return _ok(render_body(req, "chatcmpl-" + uuid.uuid4().hex[:16], req.prompts[0]))


async def h_tokenize(request: web.Request) -> web.Response:
    eng = request.app[ENGINE]
    body = await _json(request)
    if not isinstance(body, dict):
        raise InvalidRequestError("request body must be a JSON object")
    if body.get("model") not in (None, eng.opts.model):
        raise NotFoundError(f"The model `{body['model']}` does not exist.", param="model")
    if "messages" in body:
        ids = chat_prompt(body, eng.tok)
    elif isinstance(body.get("prompt"), str):
        ids = eng.tok.encode(body["prompt"])
    else:
        raise InvalidRequestError("'prompt' must be a string (or give 'messages')", param="prompt")
    strs = [eng.tok.decode([t]) for t in ids] if body.get("return_token_strs") else None
    return _ok({"count": len(ids), "max_model_len": eng.core.max_model_len, "tokens": ids, "token_strs": strs})


async def h_detokenize(request: web.Request) -> web.Response:
    body = await _json(request)
    toks = body.get("tokens") if isinstance(body, dict) else None
    if not isinstance(toks, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in toks):
        raise InvalidRequestError("'tokens' must be a list of token ids", param="tokens")
    return _ok({"prompt": request.app[ENGINE].tok.decode(toks)})


async def h_models(request: web.Request) -> web.Response:
    eng, now = request.app[ENGINE], int(time.time())
    return _ok({"object": "list", "data": [{
        "id": eng.opts.model, "object": "model", "created": now, "owned_by": "vllm", "root": eng.opts.model,
        "parent": None, "max_model_len": eng.core.max_model_len,
        "permission": [{"id": f"modelperm-{eng.engine_id.replace('-', '')[:16]}", "object": "model_permission",
                        "created": now, "allow_create_engine": False, "allow_sampling": True,
                        "allow_logprobs": True, "allow_search_indices": False, "allow_view": True,
                        "allow_fine_tuning": False, "organization": "*", "group": None, "is_blocking": False}],
    }]})


async def h_health(request: web.Request) -> web.Response:
    return web.Response(status=200 if request.app[ENGINE].ready() else 503)


async def h_version(request: web.Request) -> web.Response:
    return _ok({"version": "0.26.0"})


async def h_metrics(request: web.Request) -> web.Response:
    """vLLM's page; ``?name[]=a&name[]=b`` (blank values ignored) and gzip as prometheus_client's ASGI app."""
    names = [n for n in request.query.getall("name[]", ()) if n]
    gz = gzip_accepted(request.headers.get("Accept-Encoding", ""))
    headers = {"Content-Type": CONTENT_TYPE, **({"Content-Encoding": "gzip"} if gz else {})}
    return web.Response(body=request.app[ENGINE].metrics.render(names, gz), headers=headers)


async def h_reset(request: web.Request) -> web.Response:
    if not request.app[ENGINE].core.reset_prefix_cache():
        log.warning("reset_prefix_cache refused: blocks are in use")
    return web.Response(status=200)
