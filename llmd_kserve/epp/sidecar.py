"""``llmd-kserve pd-sidecar``: runs next to a decode engine and performs the P/D handshake the EPP asked for.

Under a gateway, Envoy sends every request to the endpoint the EPP picked; in P/D that endpoint is this sidecar
(listed in the pool with ``role=decode``), and the EPP names the prefill endpoint in ``x-prefiller-host-port``
(llm-d's header). The sidecar then runs the three steps of vLLM's NixlConnector proxy protocol
(``llmd_kserve.disagg.protocol``): step 1 to that prefill endpoint (``stream: false``, ``max_tokens: 1``,
``do_remote_decode``), step 2 its ``kv_transfer_params`` answer, step 3 the original request with them to the local
decode engine, streamed back. Without the header the request goes to the decode engine as it came.

No SSRF: the prefill address is accepted only when it belongs to the pool's prefill endpoints (``allowed``); any
other value is refused with 403, and ``kv_transfer_params`` a client put in its body are always dropped. A failed
prefill falls back to a local prefill on the decode engine. Every other path (``/metrics``, ``/health``,
``/v1/models``…) is relayed to the decode engine; ``/metrics`` gains the sidecar's own ``llmd_sidecar_pd_*``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Collection
from dataclasses import dataclass
from typing import Any

import aiohttp
import msgspec
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest

from llmd_kserve.disagg.metrics import DisaggMetrics
from llmd_kserve.disagg.orchestrator import PDOrchestrator, PrefillFailed
from llmd_kserve.disagg.protocol import KV_TRANSFER_PARAMS, decode_body, encode, strip_client_params
from llmd_kserve.epp.protocol import PREFILL_HEADER, host_port
from llmd_kserve.errors import ConfigError
from llmd_kserve.lean_http import StreamClient

log = logging.getLogger(__name__)
_decode = msgspec.json.Decoder().decode
_HOP_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection", "keep-alive", PREFILL_HEADER})


def _error(status: int, message: str, type_: str) -> web.Response:
    return web.json_response({"error": {"message": message, "type": type_, "param": None, "code": status}},
                             status=status)


class PDSidecar:
    """The sidecar's HTTP app around one decode engine (``decode_url``)."""

    def __init__(self, decode_url: str, allowed: Callable[[], Collection[str]], *,
                 prefill_timeout_s: float = 30.0) -> None:
        self.decode_url = decode_url.rstrip("/")
        self.allowed = allowed
        self.registry = CollectorRegistry()
        self.metrics = DisaggMetrics(self.registry, namespace="llmd_sidecar")
        self.session: aiohttp.ClientSession | None = None
        self.pd = PDOrchestrator(StreamClient(), self.metrics, prefill_timeout_s=prefill_timeout_s)

    async def infer(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS}
        prefill = request.headers.get(PREFILL_HEADER)
        try:
            body = _decode(raw)
        except msgspec.DecodeError:
            return _error(400, "Request body is not valid JSON.", "BadRequestError")
        if not isinstance(body, dict):
            return _error(400, "Request body must be a JSON object.", "BadRequestError")
        if KV_TRANSFER_PARAMS in body:
            self.metrics.client_params_stripped.inc()
            body = strip_client_params(body)
        if prefill:
            if prefill not in self.allowed():
                log.warning("refused prefill endpoint %r: not in the pool", prefill)
                return _error(403, f"Prefill endpoint {prefill!r} is not in the pool.", "PermissionDeniedError")
            self.metrics.requests.labels("disaggregated").inc()
            try:
                answer = await self.pd.prefill(f"http://{prefill}", request.path, body, headers)
                body = decode_body(body, answer.params)
            except PrefillFailed as exc:
                self.metrics.fallbacks.labels(exc.reason).inc()
                log.warning("prefill on %s failed (%s); prefilling locally", prefill, exc)
        else:
            self.metrics.requests.labels("local").inc()
        return await self._relay(request, "POST", encode(body), headers)

    async def _relay(self, request: web.Request, method: str, data: bytes | None,
                     headers: dict[str, str]) -> web.StreamResponse:
        assert self.session is not None
        try:
            upstream = await self.session.request(method, self.decode_url + request.path_qs, data=data,
                                                  headers=headers)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            return _error(502, f"decode engine unreachable: {exc}", "BadGatewayError")
        try:
            resp = web.StreamResponse(status=upstream.status, headers={
                k: v for k, v in upstream.headers.items() if k.lower() not in _HOP_HEADERS})
            await resp.prepare(request)
            async for chunk in upstream.content.iter_any():
                await resp.write(chunk)
            await resp.write_eof()
            return resp
        finally:
            upstream.release()

    async def passthrough(self, request: web.Request) -> web.StreamResponse:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS}
        if request.path != "/metrics":
            return await self._relay(request, request.method, await request.read() or None, headers)
        assert self.session is not None
        query = f"?{request.query_string}" if request.query_string else ""  # e.g. a scraper's ?name[]= filter
        # identity: the engine's page is concatenated with the sidecar's own (this session does not decompress)
        async with self.session.get(f"{self.decode_url}/metrics{query}", headers={"Accept-Encoding": "identity"}) as r:
            text = await r.read()
            status = r.status
        return web.Response(body=text + generate_latest(self.registry), status=status,
                            content_type="text/plain", charset="utf-8")

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 << 20)

        async def startup(_: web.Application) -> None:
            self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, connect=5),
                                                 auto_decompress=False)

        async def cleanup(_: web.Application) -> None:
            self.pd.client.close()
            if self.session is not None:
                await self.session.close()

        app.on_startup.append(startup)
        app.on_cleanup.append(cleanup)
        app.router.add_post("/v1/completions", self.infer)
        app.router.add_post("/v1/chat/completions", self.infer)
        app.router.add_route("*", "/{tail:.*}", self.passthrough)
        return app


def allowed_from(prefill: Collection[str]) -> frozenset[str]:
    """``host:port`` of each prefill endpoint (URLs or ``host:port``)."""
    out = frozenset(host_port(p.split("#", 1)[0]) for p in prefill if p.strip())
    if not out:
        raise ConfigError("give the pool's prefill endpoints (--prefill-endpoints URL[,URL...])", "prefill-endpoints")
    return out


@dataclass(frozen=True, slots=True)
class RunningSidecar:
    url: str
    sidecar: PDSidecar


@contextlib.asynccontextmanager
async def running_sidecar(decode_url: str, prefill_endpoints: Collection[str], host: str = "127.0.0.1",
                          port: int = 0, **kw: Any) -> AsyncIterator[RunningSidecar]:
    allowed = allowed_from(prefill_endpoints)
    sidecar = PDSidecar(decode_url, lambda: allowed, **kw)
    runner = web.AppRunner(sidecar.app(), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except OSError as exc:
            raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}", "port") from exc
        yield RunningSidecar(f"http://{host}:{runner.addresses[0][1]}", sidecar)
    finally:
        await runner.cleanup()


def serve(*, decode: str, prefill_endpoints: Collection[str], host: str = "0.0.0.0", port: int = 8000,
          prefill_timeout_s: float = 30.0) -> int:
    """Run the sidecar until SIGINT/SIGTERM (``llmd-kserve pd-sidecar``)."""
    from llmd_kserve.aio import run, stop_on_signals

    async def main() -> None:
        stop = stop_on_signals()
        async with running_sidecar(decode, prefill_endpoints, host, port,
                                   prefill_timeout_s=prefill_timeout_s) as running:
            print(f"llmd-kserve pd-sidecar on {running.url} in front of {decode}", flush=True)
            await stop.wait()

    run(main())
    return 0
