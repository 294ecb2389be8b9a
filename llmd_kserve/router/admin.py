"""``GET/POST /admin/config``: read and change the router's scheduler config (``llmd-kserve router --admin``).

Who may: with API keys configured, an operator key only (a virtual key made with ``keys add --admin``, or a plain
``--api-keys-file`` token); without keys, loopback clients whose ``Host`` names this machine. Web pages are kept
out: a foreign ``Origin`` is refused, and a POST must say ``application/json`` or ``application/yaml`` (a cross-site
page cannot send those without a CORS preflight, and the router never allows one). The body is read whole and must
be as long as its ``Content-Length``. Each change is audited by :meth:`ConfigReloader.submit`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Callable

import aiohttp
import msgspec
from aiohttp import web

from llmd_kserve.control.reload import AuditUnavailable, Change, ConfigReloader
from llmd_kserve.errors import ConfigError, HTTPError, InvalidRequestError
from llmd_kserve.router.browser import browser_refusal

log = logging.getLogger(__name__)
_encode = msgspec.json.Encoder().encode
MAX_CONFIG_BYTES = 1024 * 1024
CONFIG_TYPES = {"application/json": "json", "application/yaml": "yaml", "application/x-yaml": "yaml",
                "text/yaml": "yaml", "text/x-yaml": "yaml"}
"""Content types a config may be POSTed as (none of them is one a page may send cross-site without a preflight)."""


def _forbidden(message: str) -> InvalidRequestError:
    return InvalidRequestError(message, status=403, type_="PermissionDeniedError")


def _too_large() -> InvalidRequestError:
    return InvalidRequestError(f"config larger than {MAX_CONFIG_BYTES} bytes", "body", status=413,
                               type_="RequestTooLargeError")


def _is_loopback(remote: str | None) -> bool:
    try:
        return remote is not None and ipaddress.ip_address(remote.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


async def read_config_body(request: web.Request, timeout: float) -> bytes:
    """The whole body (never just what arrived so far): 413 over ``MAX_CONFIG_BYTES``, 408 when it takes longer
    than ``timeout`` s, 400 when it ends before its ``Content-Length``."""
    declared = request.content_length
    if declared is not None and declared > MAX_CONFIG_BYTES:
        raise _too_large()
    buf = bytearray()
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.content.iter_any():
                buf += chunk
                if len(buf) > MAX_CONFIG_BYTES:
                    raise _too_large()
    except TimeoutError:
        raise InvalidRequestError(f"Config body not received within {timeout:g} s.", "body", status=408,
                                  type_="RequestTimeoutError") from None
    except aiohttp.ClientPayloadError as exc:
        raise InvalidRequestError(f"Incomplete config body: {exc}", "body") from None
    if declared is not None and len(buf) != declared:
        raise InvalidRequestError(f"Incomplete config body: {len(buf)} of {declared} bytes (Content-Length).", "body")
    return bytes(buf)


class AdminAPI:
    """The two admin routes over a router's ``ConfigReloader``.

    ``operator(request)``: the operator key id of a request (raises a 401/403 HTTPError for a missing or tenant
    key); only called when ``keys_configured``. ``listen_host``: the name the router listens on (a ``Host`` it
    accepts besides IP addresses and ``localhost`` when there are no keys)."""

    def __init__(self, reloader: Callable[[], ConfigReloader | None], operator: Callable[[web.Request], str | None],
                 *, enabled: bool, keys_configured: bool, listen_host: str | None = None,
                 body_timeout: float = 30.0) -> None:
        self._reloader = reloader
        self._operator = operator
        self.enabled = enabled
        self.keys_configured = keys_configured
        self.listen_host = listen_host
        self.body_timeout = body_timeout

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/admin/config", self.get_config)
        app.router.add_post("/admin/config", self.post_config)

    def _check(self, request: web.Request) -> tuple[ConfigReloader, str | None]:
        """(the reloader, the operator key id) or an HTTPError saying why not."""
        if not self.enabled:
            raise _forbidden("The admin API is off: start the router with --admin.")
        why = browser_refusal(request.headers, self.listen_host, check_host=not self.keys_configured)
        if why is not None:
            raise _forbidden(why)
        key = None
        if self.keys_configured:
            key = self._operator(request)
        elif not _is_loopback(request.remote):
            raise _forbidden("Without API keys the admin API accepts loopback clients only; configure an operator "
                             "key (keys add --admin, or --api-keys-file) to administer the router remotely.")
        reloader = self._reloader()
        if reloader is None:
            raise InvalidRequestError("This router cannot reload its config.", status=503,
                                      type_="ServiceUnavailableError")
        return reloader, key

    @staticmethod
    def _error(exc: HTTPError, request: web.Request | None = None) -> web.Response:
        resp = web.Response(body=_encode(exc.body()), status=exc.status, content_type="application/json")
        if request is not None and not request.content.is_eof():  # the rest of the body is not worth reading
            resp.force_close()
        return resp

    async def get_config(self, request: web.Request) -> web.Response:
        try:
            reloader, _ = self._check(request)
        except HTTPError as exc:
            return self._error(exc)
        return web.Response(body=_encode(reloader.status()), content_type="application/json")

    async def post_config(self, request: web.Request) -> web.Response:
        try:
            reloader, key = self._check(request)
            if request.content_type not in CONFIG_TYPES:
                raise InvalidRequestError(f"Send the config as application/json or application/yaml, not "
                                          f"{request.content_type!r}.", "Content-Type", status=415,
                                          type_="UnsupportedMediaTypeError")
            raw = await read_config_body(request, self.body_timeout)
            generation = reloader.active.generation
            try:
                active = await reloader.submit(raw, Change("api", key, request.remote), request.content_type)
            except ConfigError as exc:
                msg = str(exc).removeprefix(f"{exc.path}: ") if exc.path else str(exc)
                raise InvalidRequestError(f"Invalid scheduler config at {exc.path or 'body'}: {msg} "
                                          f"(the active config {reloader.active.hash} stays)",
                                          exc.path or "body") from None
            except AuditUnavailable as exc:
                raise InvalidRequestError(str(exc), status=503, type_="ServiceUnavailableError") from None
        except HTTPError as exc:
            return self._error(exc, request)
        return web.Response(body=_encode({"status": "applied", "changed": active.generation != generation,
                                          "config_hash": active.hash, "generation": active.generation,
                                          "applied_at": active.applied_at,
                                          "in_flight_at_swap": reloader.in_flight_at_swap}),
                            content_type="application/json")
