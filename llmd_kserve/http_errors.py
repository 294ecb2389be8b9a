"""aiohttp middleware shared by the router and the engine: every error leaves as OpenAI-shaped JSON, never HTML/text."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from http import HTTPStatus

import msgspec
from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from llmd_kserve.errors import HTTPError, openai_error

log = logging.getLogger(__name__)
_encode = msgspec.json.Encoder().encode

_TYPES = {400: "BadRequestError", 401: "AuthenticationError", 403: "PermissionDeniedError", 404: "NotFoundError",
          405: "MethodNotAllowedError", 413: "RequestTooLargeError", 415: "UnsupportedMediaTypeError",
          422: "UnprocessableEntityError", 429: "RateLimitError", 500: "InternalServerError",
          502: "BadGatewayError", 503: "ServiceUnavailableError", 504: "GatewayTimeoutError"}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_body(message: str, status: int, param: str | None = None) -> bytes:
    """:func:`~llmd_kserve.errors.openai_error` as JSON bytes, its type named after ``status``."""
    type_ = _TYPES.get(status, "BadRequestError" if status < 500 else "InternalServerError")
    return _encode(openai_error(message, type_, param, status))


def error_response(exc: HTTPError, request_id: str | None = None) -> web.Response:
    """``exc`` as its status and OpenAI-shaped JSON body (with ``x-request-id`` when known)."""
    headers = dict(getattr(exc, "headers", None) or {})  # Retry-After, x-llmd-drop-reason (governance)
    if request_id:
        headers["x-request-id"] = request_id
    return web.Response(body=_encode(exc.body()), status=exc.status, content_type="application/json",
                        headers=headers or None)


def _message(exc: web.HTTPException, request: web.Request) -> str:
    if isinstance(exc, web.HTTPNotFound):
        return f"Not found: {request.method} {request.path}"
    if isinstance(exc, web.HTTPMethodNotAllowed):
        return f"Method {request.method} not allowed on {request.path}; use {', '.join(sorted(exc.allowed_methods))}"
    return exc.text.removeprefix(f"{exc.status}: ") if exc.text else exc.reason


@web.middleware
async def openai_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer an HTTPError a handler raised, aiohttp's own error responses (404, 405, 413 body too large, …) and
    unhandled exceptions as OpenAI-shaped JSON."""
    try:
        return await handler(request)
    except HTTPError as exc:
        return error_response(exc)
    except web.HTTPException as exc:
        if exc.status < 400 or request.transport is None or request.transport.is_closing():
            raise
        headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "www-authenticate", "retry-after")}
        return web.Response(body=error_body(_message(exc, request), exc.status), status=exc.status,
                            content_type="application/json", headers=headers)
    except ConnectionResetError:
        raise
    except Exception:
        if request.transport is None or request.transport.is_closing():
            raise  # the client is gone: nobody to answer
        log.exception("unhandled error on %s %s", request.method, request.path)
        return web.Response(body=error_body("Internal server error", 500), status=500,
                            content_type="application/json")


class _JsonErrorsHandler(RequestHandler):
    """aiohttp's protocol handler, but HTTP-parser errors (bad header bytes, CRLF, obs-fold) answer OpenAI JSON and
    log one DEBUG line, not a text/plain body and an ERROR traceback."""

    __slots__ = ()

    def handle_error(self, request: BaseRequest, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if request.writer.output_size > 0:  # a response is under way: aiohttp's own handling
            return super().handle_error(request, status, exc, message)
        log.debug("HTTP error %d from %s: %s", status, request.remote, message or exc)
        text = (message or "").strip().splitlines()[0] if (message or "").strip() else (
            HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Bad request")
        resp = web.Response(body=error_body(text, status), status=status, content_type="application/json")
        resp.force_close()
        return resp


class _JsonErrorsServer(web.Server):
    def __call__(self) -> RequestHandler:
        handler = super().__call__()
        if type(handler) is RequestHandler:
            handler.__class__ = _JsonErrorsHandler
        return handler


def json_parser_errors(runner: web.BaseRunner) -> None:
    """After ``runner.setup()``: make the HTTP parser's own error answers OpenAI-shaped JSON too."""
    server = runner.server
    if type(server) is web.Server:
        server.__class__ = _JsonErrorsServer
