"""The simulated vLLM 0.26 HTTP server (aiohttp): OpenAI endpoints, /metrics, KV events, P/D, failure injection.

In-process use (tests, ``up``, benchmarks)::

    async with running_engine(port=0, kv_events_endpoint="tcp://127.0.0.1:0", time_scale=1.0) as eng:
        eng.url                 # http://127.0.0.1:<port>
        eng.kv_events_endpoint  # tcp://127.0.0.1:<port> (None without a publisher)
        eng.endpoint            # llmd_kserve.types.Endpoint for routers

``serve(**cli_kwargs)`` runs one engine until SIGINT/SIGTERM (``llmd-kserve engine``). Options are the fields of
:class:`EngineOptions`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import signal
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, fields
from typing import Any

import msgspec
from aiohttp import web

from llmd_kserve.engine_sim import pd
from llmd_kserve.engine_sim.core import EngineCore
from llmd_kserve.engine_sim.driver import RealtimeDriver, Stream
from llmd_kserve.engine_sim.metrics import CONTENT_TYPE, EngineMetrics
from llmd_kserve.engine_sim.openai_api import (
    GenRequest,
    NotFoundError,
    chat_prompt,
    json_bytes,
    parse_generate,
    render_body,
)
from llmd_kserve.engine_sim.profile import DEFAULT_PROFILE, load_profile
from llmd_kserve.engine_sim.publisher import KVEventPublisher
from llmd_kserve.engine_sim.serving import generate
from llmd_kserve.errors import ConfigError, InvalidRequestError
from llmd_kserve.http_errors import openai_errors
from llmd_kserve.tokenizer import load_tokenizer
from llmd_kserve.types import Endpoint, EndpointId, Role

log = logging.getLogger(__name__)
_decode_json = msgspec.json.Decoder()


@dataclass(frozen=True, slots=True)
class EngineOptions:
    """Everything ``llmd-kserve engine`` accepts (None: the profile's value)."""

    host: str = "127.0.0.1"
    port: int = 0
    model: str = "llama-8b-shape"
    profile: str = DEFAULT_PROFILE
    num_blocks: int | None = None
    block_size: int | None = None
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    max_model_len: int | None = None
    kv_events_endpoint: str | None = None
    kv_events_topic: str | None = None
    role: Role = "both"
    kv_link_gbps: float | None = None
    kv_lease_s: float = 480.0
    kv_connector: bool = True
    """False: ignore ``kv_transfer_params`` and answer ``null`` (vLLM without a KV connector)."""
    time_scale: float = 1.0
    seed: int = 0
    error_rate: float = 0.0
    crash_after: int | None = None
    crash_exits_process: bool = False
    slow_start: float = 0.0
    default_output_len: int = 128
    tokenizer: str | None = None
    advertise_host: str | None = None


def _check_options(o: EngineOptions) -> None:
    """Reject option values the engine cannot run with, naming the option (ConfigError)."""
    if not 0 <= o.port <= 65535:
        raise ConfigError(f"must be 0..65535, got {o.port}", "port")
    for name in ("num_blocks", "block_size", "max_num_seqs", "max_num_batched_tokens", "max_model_len",
                 "default_output_len", "crash_after"):
        v = getattr(o, name)
        if v is not None and v < 1:
            raise ConfigError(f"must be >= 1, got {v}", name)
    for name in ("time_scale", "slow_start", "kv_lease_s"):
        if getattr(o, name) < 0:
            raise ConfigError(f"must be >= 0, got {getattr(o, name)}", name)
    if not 0.0 <= o.error_rate <= 1.0:
        raise ConfigError(f"must be in [0, 1], got {o.error_rate}", "error_rate")
    if o.kv_link_gbps is not None and o.kv_link_gbps <= 0:
        raise ConfigError(f"must be > 0, got {o.kv_link_gbps}", "kv_link_gbps")


class SimEngine:
    """One engine: core + real-time driver + metrics + optional KV-event publisher + aiohttp app."""

    def __init__(self, opts: EngineOptions) -> None:
        _check_options(opts)
        self.opts = opts
        self.profile = load_profile(opts.profile)
        self.tok = load_tokenizer(opts.tokenizer)
        self.core = EngineCore(self.profile, num_blocks=opts.num_blocks, block_size=opts.block_size,
                               max_num_seqs=opts.max_num_seqs, max_num_batched_tokens=opts.max_num_batched_tokens,
                               max_model_len=opts.max_model_len, seed=opts.seed)
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
        self._transports: set[asyncio.BaseTransport] = set()
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
        return Endpoint(id=EndpointId(self.url), role=self.opts.role, kv_events=self.kv_events_endpoint)

    def build_app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024, middlewares=[openai_errors])
        r = app.router
        r.add_post("/v1/completions", self.h_completions)
        r.add_post("/v1/chat/completions", self.h_chat)
        r.add_post("/v1/completions/render", self.h_render_completions)
        r.add_post("/v1/chat/completions/render", self.h_render_chat)
        r.add_get("/v1/models", self.h_models)
        r.add_get("/health", self.h_health)
        r.add_get("/ping", self.h_health)
        r.add_get("/version", self.h_version)
        r.add_get("/metrics", self.h_metrics)
        r.add_post("/tokenize", self.h_tokenize)
        r.add_post("/detokenize", self.h_detokenize)
        r.add_post("/reset_prefix_cache", self.h_reset)
        r.add_post(pd.PULL_PATH, self.h_pull)
        return app

    async def start(self) -> None:
        # handler_cancellation: a client that disconnects cancels its handler, which aborts its request (as vLLM does)
        self._runner = web.AppRunner(self.build_app(), access_log=None, handle_signals=False, handler_cancellation=True)
        await self._runner.setup()
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
            self.publisher = KVEventPublisher(self.opts.kv_events_endpoint, topic)
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
        for t in list(self._transports):
            t.abort()
        if self.opts.crash_exits_process:
            os._exit(1)
        if self._site is not None:
            asyncio.get_running_loop().create_task(self._site.stop())

    # --- helpers ------------------------------------------------------------------------------------------------
    @staticmethod
    def _error(exc: InvalidRequestError, rid: str | None = None) -> web.Response:
        headers = {"x-request-id": rid} if rid else None
        return web.Response(body=json_bytes(exc.body()), status=exc.status, content_type="application/json",
                            headers=headers)

    @staticmethod
    async def _json(request: web.Request) -> Any:
        try:
            return _decode_json.decode(await request.read())
        except msgspec.DecodeError as exc:
            raise InvalidRequestError(f"JSON decode error: {exc}") from exc

    def _ok(self, body: Any, rid: str | None = None) -> web.Response:
        return web.Response(body=json_bytes(body), content_type="application/json",
                            headers={"x-request-id": rid} if rid else None)

    def _core_id(self, rid: str, i: int) -> str:
        self._seq += 1
        return f"{rid}-{i}-{self._seq}"

    def _parse(self, body: Any, kind: str) -> GenRequest:
        return parse_generate(body, kind, model=self.opts.model, tok=self.tok, max_model_len=self.core.max_model_len,
                              default_output_len=self.opts.default_output_len)  # type: ignore[arg-type]

    # --- generation ---------------------------------------------------------------------------------------------
    async def h_completions(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, "completion")

    async def h_chat(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, "chat")

    async def _generate(self, request: web.Request, kind: str) -> web.StreamResponse:
        base = request.headers.get("x-request-id") or uuid.uuid4().hex[:16]
        rid = ("cmpl-" if kind == "completion" else "chatcmpl-") + base
        if time.monotonic() < self._ready_at:
            return self._error(InvalidRequestError("engine is starting", status=503, type_="ServiceUnavailable"), base)
        self.n_requests += 1
        if self.opts.crash_after is not None and self.n_requests > self.opts.crash_after:
            self.crash()
            if request.transport is not None:
                request.transport.abort()  # this connection dies with the pod too
            raise web.HTTPServiceUnavailable()
        try:
            req = self._parse(await self._json(request), kind)
        except InvalidRequestError as exc:
            return self._error(exc, base)
        if self.opts.error_rate > 0 and self.rng.random() < self.opts.error_rate:
            return self._error(InvalidRequestError("simulated engine failure", status=500,
                                                   type_="InternalServerError"), base)
        self._transports.add(request.transport)  # type: ignore[arg-type]
        try:
            return await generate(self, request, req, rid, base)
        finally:
            self._transports.discard(request.transport)  # type: ignore[arg-type]

    def submit(self, core_id: str, prompt: list[int], req: GenRequest, **kw: Any) -> Stream:
        assert self.driver is not None
        return self.driver.submit(core_id, prompt, req.max_tokens, output_len=req.output_len, **kw)

    def hold(self, core_id: str) -> None:
        """Keep a finished prefill's blocks for the lease, then free them."""
        delay = self.opts.kv_lease_s * max(self.opts.time_scale, 1e-3)
        self._leases[core_id] = asyncio.get_running_loop().call_later(delay, self._expire, core_id)

    def _expire(self, core_id: str) -> None:
        self._leases.pop(core_id, None)
        self.core.release(core_id)

    # --- other endpoints ----------------------------------------------------------------------------------------
    async def h_pull(self, request: web.Request) -> web.Response:
        body = await request.json()
        cid = body.get("remote_request_id")
        if body.get("remote_engine_id") != self.engine_id or cid not in self.core.held:
            return self._error(InvalidRequestError("unknown or expired remote request", status=404,
                                                   type_="NotFoundError"))
        blocks = self.core.held_blocks(cid) or []
        h = self._leases.pop(cid, None)
        if h is not None:
            h.cancel()
        self.core.release(cid)
        return self._ok({"num_blocks": len(blocks), "block_size": self.core.block_size})

    async def h_render_completions(self, request: web.Request) -> web.Response:
        try:
            req = self._parse(await self._json(request), "completion")
        except InvalidRequestError as exc:
            return self._error(exc)
        rid = "cmpl-" + uuid.uuid4().hex[:16]
        return self._ok([render_body(req, rid, p) for p in req.prompts])

    async def h_render_chat(self, request: web.Request) -> web.Response:
        try:
            req = self._parse(await self._json(request), "chat")
        except InvalidRequestError as exc:
            return self._error(exc)
        return self._ok(render_body(req, "chatcmpl-" + uuid.uuid4().hex[:16], req.prompts[0]))

    async def h_tokenize(self, request: web.Request) -> web.Response:
        try:
            body = await self._json(request)
            if not isinstance(body, dict):
                raise InvalidRequestError("request body must be a JSON object")
            if body.get("model") not in (None, self.opts.model):
                raise NotFoundError(f"The model `{body['model']}` does not exist.", param="model")
            if "messages" in body:
                ids = chat_prompt(body, self.tok)
            elif isinstance(body.get("prompt"), str):
                ids = self.tok.encode(body["prompt"])
            else:
                raise InvalidRequestError("'prompt' must be a string (or give 'messages')", param="prompt")
        except InvalidRequestError as exc:
            return self._error(exc)
        strs = [self.tok.decode([t]) for t in ids] if body.get("return_token_strs") else None
        return self._ok({"count": len(ids), "max_model_len": self.core.max_model_len, "tokens": ids,
                         "token_strs": strs})

    async def h_detokenize(self, request: web.Request) -> web.Response:
        try:
            body = await self._json(request)
            toks = body.get("tokens") if isinstance(body, dict) else None
            if not isinstance(toks, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in toks):
                raise InvalidRequestError("'tokens' must be a list of token ids", param="tokens")
        except InvalidRequestError as exc:
            return self._error(exc)
        return self._ok({"prompt": self.tok.decode(toks)})

    async def h_models(self, request: web.Request) -> web.Response:
        now = int(time.time())
        return self._ok({"object": "list", "data": [{
            "id": self.opts.model, "object": "model", "created": now, "owned_by": "vllm", "root": self.opts.model,
            "parent": None, "max_model_len": self.core.max_model_len,
            "permission": [{"id": f"modelperm-{self.engine_id.replace('-', '')[:16]}", "object": "model_permission",
                            "created": now, "allow_create_engine": False, "allow_sampling": True,
                            "allow_logprobs": True, "allow_search_indices": False, "allow_view": True,
                            "allow_fine_tuning": False, "organization": "*", "group": None, "is_blocking": False}],
        }]})

    async def h_health(self, request: web.Request) -> web.Response:
        if time.monotonic() < self._ready_at:
            return web.Response(status=503)
        return web.Response(status=200)

    async def h_version(self, request: web.Request) -> web.Response:
        return self._ok({"version": "0.26.0"})

    async def h_metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=self.metrics.render(), headers={"Content-Type": CONTENT_TYPE})

    async def h_reset(self, request: web.Request) -> web.Response:
        if not self.core.reset_prefix_cache():
            log.warning("reset_prefix_cache refused: blocks are in use")
        return web.Response(status=200)


@asynccontextmanager
async def running_engine(port: int = 0, host: str = "127.0.0.1", **opts: Any) -> AsyncIterator[SimEngine]:
    """Start one engine in this event loop; stopped (connections closed, socket unbound) on exit."""
    eng = SimEngine(EngineOptions(host=host, port=port, **opts))
    try:
        await eng.start()
        yield eng
    finally:
        await eng.stop()


def serve(**kwargs: Any) -> int:
    """Run one engine until SIGINT/SIGTERM (the ``llmd-kserve engine`` command); kwargs: EngineOptions fields."""
    known = {f.name for f in fields(EngineOptions)}
    opts = {k: v for k, v in kwargs.items() if k in known and v is not None}
    opts.setdefault("crash_exits_process", True)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        async with running_engine(**opts) as eng:
            print(f"engine ready: {eng.url} model={eng.opts.model} kv_events={eng.kv_events_endpoint}", flush=True)
            await stop.wait()

    try:
        import uvloop

        uvloop.run(main())
    except ImportError:  # pragma: no cover - uvloop is a base dependency except on Windows
        asyncio.run(main())
    return 0
