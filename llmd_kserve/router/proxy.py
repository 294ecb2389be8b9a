"""Forwarding one OpenAI request: schedule, send, retry before the first byte, stream back, report the outcome."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection, Sequence
from typing import Any, Protocol

import aiohttp
import msgspec
from aiohttp import web

from llmd_kserve.disagg.metrics import DisaggMetrics
from llmd_kserve.disagg.orchestrator import PDOrchestrator
from llmd_kserve.errors import NoEndpoint, NoEndpointError, UpstreamFailed
from llmd_kserve.metrics.router_metrics import RouterMetrics
from llmd_kserve.router.decisions import Decision, DecisionLog
from llmd_kserve.router.governance import ParsedRequest
from llmd_kserve.scheduling.scheduler import SchedulingResult
from llmd_kserve.types import EndpointId, EndpointState, LLMRequest, RequestOutcome

log = logging.getLogger(__name__)
_encode = msgspec.json.Encoder().encode
_FORWARD_HEADERS = ("traceparent", "tracestate", "x-session-id", "x-gateway-destination-endpoint-subset")


class SchedulerLike(Protocol):
    """The part of ``scheduling.scheduler.Scheduler`` the proxy uses."""

    def schedule(self, request: LLMRequest, endpoints: Sequence[EndpointState],
                 exclude: Collection[EndpointId] = ()) -> SchedulingResult: ...
    def on_complete(self, request: LLMRequest, result: SchedulingResult, outcome: RequestOutcome) -> None: ...


class _Details(msgspec.Struct):
    cached_tokens: int | None = None


class _Usage(msgspec.Struct):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    prompt_tokens_details: _Details | None = None


class _WithUsage(msgspec.Struct):
    usage: _Usage | None = None


_usage_decode = msgspec.json.Decoder(_WithUsage).decode


def parse_usage(raw: bytes) -> _Usage | None:
    """``usage`` of a JSON body (unknown fields skipped by msgspec), or None."""
    try:
        return _usage_decode(raw).usage
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


def _usage_from_sse_tail(tail: bytes) -> _Usage | None:
    """The usage object of the last ``data:`` event carrying one in the stream's tail."""
    idx = tail.rfind(b'"usage"')
    if idx < 0:
        return None
    start = tail.rfind(b"data:", 0, idx)
    end = tail.find(b"\n", idx)
    if start < 0:
        return None
    return parse_usage(tail[start + 5 : end if end >= 0 else len(tail)].strip())


def _is_usage_only_event(event: bytes) -> bool:
    return event.startswith(b"data: {") and b'"usage"' in event and b'"choices":[]' in event


class _Failed(Exception):
    """An attempt failed before the first byte; ``response`` is what to relay if no retry is left."""

    def __init__(self, reason: str, status: int = 502, body: bytes | None = None, content_type: str = "") -> None:
        super().__init__(reason)
        self.reason, self.status, self.body, self.content_type = reason, status, body, content_type


class Proxy:
    """Sends requests to the endpoint the scheduler picks; the one place that owns the upstream HTTP session."""

    def __init__(self, scheduler: SchedulerLike, endpoint_states: Callable[[], Sequence[EndpointState]],
                 metrics: RouterMetrics, decisions: DecisionLog, session: Callable[[], aiohttp.ClientSession],
                 *, max_attempts: int = 3, forward_authorization: bool = True, inject_stream_usage: bool = True,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.scheduler = scheduler
        self.endpoint_states = endpoint_states
        self.metrics = metrics
        self.decisions = decisions
        self._session = session
        self.max_attempts = max(1, max_attempts)
        self.forward_authorization = forward_authorization
        self.inject_stream_usage = inject_stream_usage
        self._clock = clock
        self.pd = PDOrchestrator(session, DisaggMetrics.on(metrics.registry), clock=clock)

    def _upstream_body(self, req: ParsedRequest, raw: bytes) -> tuple[bytes, bool]:
        """(body to send, whether to strip the usage event we asked for) — usage feeds cached-token accounting."""
        if not (req.stream and self.inject_stream_usage):
            return raw, False
        opts = req.body.get("stream_options") or {}
        if opts.get("include_usage"):
            return raw, False
        return _encode({**req.body, "stream_options": {**opts, "include_usage": True}}), True

    async def forward(self, request: web.Request, path: str, req: ParsedRequest, raw: bytes,
                      llm_req: LLMRequest, on_scheduled: Callable[[str], None] | None = None) -> web.StreamResponse:
        rid = llm_req.request_id
        body, strip_usage = self._upstream_body(req, raw)
        headers = {"Content-Type": "application/json", "x-request-id": rid}
        for name in _FORWARD_HEADERS:
            if name in request.headers:
                headers[name] = request.headers[name]
        if self.forward_authorization and "Authorization" in request.headers:
            headers["Authorization"] = request.headers["Authorization"]
        exclude: set[EndpointId] = set()
        last: _Failed | None = None
        for attempt in range(self.max_attempts):
            t0 = self._clock()
            try:
                result = self.scheduler.schedule(llm_req, self.endpoint_states(), exclude)
            except NoEndpointError as exc:
                if last is not None:
                    break
                raise NoEndpoint(f"No endpoint available: {exc}") from None
            sched_s = self._clock() - t0
            self.metrics.scheduling_seconds.observe(sched_s)
            self.metrics.decisions.labels(result.target, result.profile).inc()
            decision = self.decisions.add(rid, attempt, result, sched_s * 1e3)
            if on_scheduled is not None and attempt == 0:
                on_scheduled(result.target)
            if attempt:
                self.metrics.retries.inc()
            # P/D (llmd_kserve.disagg): prefill hop when result.prefill is set; always drops any
            # client-supplied kv_transfer_params. Returns the body for result.target (the decode endpoint).
            try:
                send_body = await self.pd.upstream_body(llm_req, result, path, body, headers, self.scheduler)
                upstream = await self._send(result.target + path, send_body, headers, t0, decision)
            except _Failed as fail:
                last = fail
                decision.outcome, decision.status = fail.reason, fail.status
                self.metrics.upstream_errors.labels(result.target, fail.reason).inc()
                self.scheduler.on_complete(llm_req, result, RequestOutcome(ok=False))
                exclude.add(result.target)
                log.info("request %s: %s on %s (attempt %d)", rid, fail.reason, result.target, attempt + 1)
                continue
            except BaseException as exc:  # client gone while waiting for upstream headers (cancelled), or a bug:
                decision.outcome = "client_disconnected" if isinstance(exc, asyncio.CancelledError) else "error"
                if isinstance(exc, asyncio.CancelledError):
                    self.metrics.client_disconnects.inc()
                self.scheduler.on_complete(llm_req, result, RequestOutcome(ok=False))  # release in-flight load
                raise
            return await self._relay(request, upstream, llm_req, result, decision, strip_usage, t0)
        assert last is not None
        if last.body is not None:  # relay the last upstream error as it was
            return web.Response(body=last.body, status=last.status, headers={
                "Content-Type": last.content_type or "application/json", "x-request-id": rid})
        raise UpstreamFailed(f"All upstream attempts failed (last: {last.reason}).")

    async def _send(self, url: str, body: bytes, headers: dict[str, str], t0: float,
                    decision: Decision) -> aiohttp.ClientResponse:
        try:
            upstream = await self._session().post(url, data=body, headers=headers)
        except (TimeoutError, aiohttp.ClientConnectionError, OSError) as exc:
            raise _Failed("connect" if isinstance(exc, aiohttp.ClientConnectorError) else "disconnected") from exc
        decision.ttfb_ms = (self._clock() - t0) * 1e3
        if upstream.status >= 500:
            try:
                raw = await upstream.read()
            except (TimeoutError, aiohttp.ClientError):
                raw = None
            finally:
                upstream.release()
            raise _Failed(f"http_{upstream.status}", upstream.status, raw, upstream.headers.get("Content-Type", ""))
        return upstream

    async def _relay(self, request: web.Request, upstream: aiohttp.ClientResponse, llm_req: LLMRequest,
                     result: Any, decision: Decision, strip_usage: bool, t0: float) -> web.StreamResponse:
        out_headers = {"Content-Type": upstream.headers.get("Content-Type", "application/json"),
                       "x-request-id": llm_req.request_id, "x-llmd-endpoint": result.target}
        ok, usage, status = False, None, upstream.status
        decision.status = status
        resp: web.StreamResponse | None = None
        try:
            if not upstream.headers.get("Content-Type", "").startswith("text/event-stream"):
                raw = await upstream.read()
                self.metrics.ttfb_seconds.observe(self._clock() - t0)
                ok = status < 400
                usage = parse_usage(raw) if ok else None
                decision.outcome = "ok" if ok else f"http_{status}"
                return web.Response(body=raw, status=status, headers=out_headers)
            out_headers["Cache-Control"] = "no-cache"
            resp = web.StreamResponse(status=status, headers=out_headers)
            await resp.prepare(request)
            prev = last = b""
            usage_event = b""
            try:
                async for chunk in upstream.content.iter_any():
                    if strip_usage and b'"usage"' in chunk:
                        events = chunk.split(b"\n\n")
                        kept = [e for e in events if not _is_usage_only_event(e)]
                        if len(kept) != len(events):
                            usage_event = next(e for e in events if _is_usage_only_event(e))
                            chunk = b"\n\n".join(kept)
                            if not chunk:
                                continue
                    if not last:
                        self.metrics.ttfb_seconds.observe(self._clock() - t0)
                    prev, last = last, chunk
                    await resp.write(chunk)
            except ConnectionResetError:  # our client went away (aiohttp's reset error is also a ClientError)
                raise
            except (TimeoutError, aiohttp.ClientPayloadError, aiohttp.ClientConnectionError) as exc:
                decision.outcome = "upstream_broke"
                self.metrics.upstream_errors.labels(result.target, "stream_broken").inc()
                err = UpstreamFailed(f"upstream stream broke: {exc}").body()
                await resp.write(b"data: " + _encode(err) + b"\n\n")
                return resp
            ok = status < 400
            usage = _usage_from_sse_tail(usage_event or prev + last)
            decision.outcome = "ok" if ok else f"http_{status}"
            await resp.write_eof()
            return resp
        except asyncio.CancelledError:
            self._disconnected(decision, upstream)
            raise
        except ConnectionResetError:  # writing to a client that went away
            self._disconnected(decision, upstream)
            return resp if resp is not None else web.Response(status=499)
        finally:
            upstream.release()
            self._complete(llm_req, result, decision, ok, usage)

    def _disconnected(self, decision: Decision, upstream: aiohttp.ClientResponse) -> None:
        decision.outcome = "client_disconnected"
        self.metrics.client_disconnects.inc()
        upstream.close()  # drop the connection so the engine aborts the request

    def _complete(self, llm_req: LLMRequest, result: Any, decision: Decision, ok: bool, usage: _Usage | None) -> None:
        cached = None
        prompt_tokens = completion_tokens = 0
        if usage is not None:
            prompt_tokens, completion_tokens = usage.prompt_tokens, usage.completion_tokens
            if usage.prompt_tokens_details is not None:
                cached = usage.prompt_tokens_details.cached_tokens
        decision.cached_tokens, decision.prompt_tokens = cached, (prompt_tokens or None)
        self.metrics.observe_cached(result.target, result.predicted_cached_tokens, cached, prompt_tokens)
        self.scheduler.on_complete(llm_req, result, RequestOutcome(ok=ok, prompt_tokens=prompt_tokens or
                                                                   result.prompt_tokens, cached_tokens=cached,
                                                                   completion_tokens=completion_tokens))
