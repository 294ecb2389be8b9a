"""Forwarding one OpenAI request: schedule, send, retry before the first byte, stream back, report the outcome.

Upstream time limits (:class:`UpstreamTimeouts`): connecting (the session's), the first byte (response headers,
and for a stream its first event too) and the gap between two chunks. A first-byte timeout is retried on another
endpoint like a connect error; a stream that stalls after its first event ends with an OpenAI-shaped SSE error
event. Either way the endpoint is reported to the outlier ejector (``router.outliers``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from typing import Any, Protocol

import aiohttp
import msgspec
from aiohttp import web

from llmd_kserve.disagg.metrics import DisaggMetrics
from llmd_kserve.disagg.orchestrator import PDOrchestrator
from llmd_kserve.disagg.protocol import PrefillAnswer, decode_body
from llmd_kserve.errors import GatewayTimeout, HTTPError, NoEndpoint, NoEndpointError, UpstreamFailed
from llmd_kserve.governance.gateway import Admission
from llmd_kserve.http_errors import error_response
from llmd_kserve.lean_http import Exchange, StreamClient, UpstreamBroken
from llmd_kserve.metrics.router_metrics import RouterMetrics
from llmd_kserve.router.decisions import Decision, DecisionLog
from llmd_kserve.router.governance import ParsedRequest
from llmd_kserve.router.outliers import OutlierEjector
from llmd_kserve.router.sse_relay import SseRelay
from llmd_kserve.router.timeouts import DEFAULT_TIMEOUTS, UpstreamTimeouts, sse_error
from llmd_kserve.router.usage import Usage, parse_usage
from llmd_kserve.scheduling.scheduler import SchedulingResult
from llmd_kserve.types import EndpointId, EndpointState, LLMRequest, RequestOutcome

log = logging.getLogger(__name__)
_encode = msgspec.json.Encoder().encode
_FORWARD_HEADERS = ("traceparent", "tracestate", "x-session-id", "x-gateway-destination-endpoint-subset")
STATUS_KEY: Any = web.ResponseKey("llmd_status", int) if hasattr(web, "ResponseKey") else "llmd_status"
"""Set on a streamed response whose status line said 200 but which ended in an error event (the metrics label)."""
ANSWERED_KEY: Any = web.RequestKey("llmd_answered", int) if hasattr(web, "RequestKey") else "llmd_answered"
"""Set on the request once its whole answer was relayed (its status): a client that hangs up after the last byte
(while the router still writes the stream's end or its records) got its answer and is not counted as gone."""


class SchedulerLike(Protocol):
    """The part of ``scheduling.scheduler.Scheduler`` the proxy uses."""

    def schedule(self, request: LLMRequest, endpoints: Sequence[EndpointState],
                 exclude: Collection[EndpointId] = ()) -> SchedulingResult: ...
    def on_complete(self, request: LLMRequest, result: SchedulingResult, outcome: RequestOutcome) -> None: ...
    def on_prefill_complete(self, request: LLMRequest, result: SchedulingResult,
                            outcome: RequestOutcome) -> None: ...


class Activity(Protocol):
    """Who is told which endpoints have requests on them (the adaptive metrics scraper)."""

    def started(self, eid: EndpointId) -> None: ...
    def finished(self, eid: EndpointId) -> None: ...
    def refresh_idle(self) -> Awaitable[None] | None: ...


class Observer(Protocol):
    """Governance's view of an answer (``governance.gateway.Gateway``), given the request's own ``Admission``:
    its bytes as relayed, and at its end the engine's usage or, without one, the content tokens relayed."""

    def tap(self, adm: Admission) -> Callable[[bytes], None] | None: ...
    def observe(self, adm: Admission, usage: tuple[int, int] | None, relayed_tokens: int = 0,
                reached_engine: bool = True) -> None: ...


class _Failed(Exception):
    """An attempt failed before the first byte; ``response`` is what to relay if no retry is left."""

    def __init__(self, reason: str, status: int = 502, body: bytes | None = None, content_type: str = "") -> None:
        super().__init__(reason)
        self.reason, self.status, self.body, self.content_type = reason, status, body, content_type


_OUTLIER_REASONS = frozenset({"connect", "disconnected", "timeout"})


class Proxy:
    """Sends requests to the endpoint the scheduler picks; the one place that owns the upstream HTTP clients."""

    def __init__(self, scheduler: SchedulerLike, endpoint_states: Callable[[], Sequence[EndpointState]],
                 metrics: RouterMetrics, decisions: DecisionLog, session: Callable[[], aiohttp.ClientSession],
                 *, max_attempts: int = 3, forward_authorization: bool = True, inject_stream_usage: bool = True,
                 timeouts: UpstreamTimeouts = DEFAULT_TIMEOUTS, outliers: OutlierEjector | None = None,
                 kv_transfer_time: Callable[[int], float] | None = None,
                 clock: Callable[[], float] = time.perf_counter, activity: Activity | None = None) -> None:
        self.scheduler = scheduler
        self.endpoint_states = endpoint_states
        self.metrics = metrics
        self.decisions = decisions
        self.max_attempts = max(1, max_attempts)
        self.forward_authorization = forward_authorization
        self.inject_stream_usage = inject_stream_usage
        self.timeouts = timeouts
        self.outliers = outliers
        self._clock = clock
        self.activity = activity
        self.http = StreamClient(connect_timeout=timeouts.connect)
        """Every request to an engine goes through it (streamed answers without a task per chunk); the aiohttp
        ``session`` serves the P/D prefill hop."""
        self.observer: Observer | None = None
        self.pd = PDOrchestrator(session, DisaggMetrics.on(metrics.registry), kv_transfer_time=kv_transfer_time,
                                 clock=clock)

    def _client_body(self, req: ParsedRequest, rid: str, metered: bool) -> tuple[Mapping[str, Any], bool]:
        """(decoded body to send, whether to strip the usage event we asked for) — usage feeds cached-token
        accounting and, when ``metered``, billing (then always asked for). Usage is left to the client only when it
        asked with exactly JSON ``true`` (an engine may read ``"false"`` or ``0`` as false, and a stream without
        usage cannot be metered). Client ``kv_transfer_params`` are dropped here, on the decoded body, once."""
        body = self.pd.client_body(rid, req.body)
        if not (req.stream and (self.inject_stream_usage or metered)):
            return body, False
        opts = body.get("stream_options") or {}
        if opts.get("include_usage") is True:
            return body, False
        return {**body, "stream_options": {**opts, "include_usage": True}}, True

    def _failed(self, endpoint: EndpointId, reason: str) -> None:
        self.metrics.upstream_errors.labels(endpoint, reason).inc()
        if self.outliers is not None and reason in _OUTLIER_REASONS | {"stream_broken", "stream_timeout"}:
            self.outliers.failure(endpoint, reason)

    async def forward(self, request: web.Request, path: str, req: ParsedRequest, llm_req: LLMRequest,
                      on_scheduled: Callable[[str], None] | None = None, *, admission: Admission | None = None,
                      client_request_id: str | None = None) -> web.StreamResponse:
        """Schedule, send and relay one request. ``llm_req.request_id`` is the router's own id; the client's
        ``x-request-id`` (``client_request_id``) is forwarded and echoed as a label. With an ``admission``, the
        observer hears how the answer ended (its usage, or the tokens relayed) through that object only."""
        rid = llm_req.request_id
        body, strip_usage = self._client_body(req, rid, admission is not None)
        local_body: bytes | None = None  # encoded once, at send time
        label = client_request_id or rid
        headers = {"Content-Type": "application/json", "x-request-id": label}
        for name in _FORWARD_HEADERS:
            if name in request.headers:
                headers[name] = request.headers[name]
        if self.forward_authorization and "Authorization" in request.headers:
            headers["Authorization"] = request.headers["Authorization"]
        exclude: set[EndpointId] = set()
        last: _Failed | None = None
        activity = self.activity
        if activity is not None:
            fresh = activity.refresh_idle()  # the first request after an idle spell: scrape the idle endpoints first
            if fresh is not None:
                await fresh
        for attempt in range(self.max_attempts):
            t0 = self._clock()
            states = self.endpoint_states()
            skip = exclude
            if self.outliers is not None:
                skip = exclude | self.outliers.ejected([s.id for s in states if s.id not in exclude])
            try:
                result = self.scheduler.schedule(llm_req, states, skip)
            except NoEndpointError as exc:
                if last is not None:
                    break
                raise NoEndpoint(f"No endpoint available: {exc}") from None
            sched_s = self._clock() - t0
            self.metrics.scheduling_seconds.observe(sched_s)
            self.metrics.decision_count(result.target, result.profile).inc()
            decision = self.decisions.add(rid, attempt, result, sched_s * 1e3, client_request_id)
            if on_scheduled is not None and attempt == 0:
                on_scheduled(result.target)
            if attempt:
                self.metrics.retries.inc()
            if activity is not None:
                activity.started(result.target)
            try:
                if result.prefill is None:
                    self.pd.local()
                    if local_body is None:
                        local_body = _encode(body)
                    send_body = local_body
                else:
                    send_body = await self._disaggregated(llm_req, result, path, body, headers)
                exchange = await self._send(result.target, path, send_body, headers, t0, decision)
            except _Failed as fail:
                last = fail
                decision.outcome, decision.status = fail.reason, fail.status
                self._failed(result.target, fail.reason)
                if activity is not None:
                    activity.finished(result.target)
                self.scheduler.on_complete(llm_req, result, RequestOutcome(ok=False))
                exclude.add(result.target)
                log.info("request %s: %s on %s (attempt %d)", rid, fail.reason, result.target, attempt + 1)
                continue
            except BaseException as exc:  # client gone while waiting for upstream headers (cancelled), or a bug:
                decision.outcome = "client_disconnected" if isinstance(exc, asyncio.CancelledError) else "error"
                if isinstance(exc, asyncio.CancelledError):
                    self.metrics.client_disconnects.inc()
                if activity is not None:
                    activity.finished(result.target)
                self.scheduler.on_complete(llm_req, result, RequestOutcome(ok=False))  # release in-flight load
                if admission is not None and self.observer is not None:  # sent: the engine may have worked on it
                    self.observer.observe(admission, None, 0, reached_engine=True)
                raise
            return await self._relay(request, exchange, llm_req, result, decision, strip_usage, t0, admission, label)
        assert last is not None
        if last.body is not None:  # relay the last upstream error as it was
            return web.Response(body=last.body, status=last.status, headers={
                "Content-Type": last.content_type or "application/json", "x-request-id": label})
        if last.reason == "timeout":
            raise GatewayTimeout("All upstream attempts timed out before the first byte.")
        raise UpstreamFailed(f"All upstream attempts failed (last: {last.reason}).")

    async def _disaggregated(self, llm_req: LLMRequest, result: Any, path: str, body: Mapping[str, Any],
                             headers: Mapping[str, str]) -> bytes:
        """Prefill hop, then the decode body (the prefill's ``kv_transfer_params``, or none: local prefill)."""
        answer: PrefillAnswer | None = None
        if self.activity is not None and result.prefill is not None:
            self.activity.started(result.prefill)
        try:
            answer = await self.pd.prefill_hop(llm_req, result, path, body, headers)
        finally:  # the prefill leg is over (also when cancelled): release its charge now
            if self.activity is not None and result.prefill is not None:
                self.activity.finished(result.prefill)
            outcome = RequestOutcome(ok=answer is not None, prompt_tokens=answer.prompt_tokens if answer else 0,
                                     cached_tokens=answer.cached_tokens if answer else None)
            try:
                self.scheduler.on_prefill_complete(llm_req, result, outcome)
            except Exception:  # bookkeeping must not fail the request
                log.exception("releasing the prefill leg of %s failed", llm_req.request_id)
        return _encode(decode_body(body, answer.params) if answer is not None else body)

    async def _send(self, target: EndpointId, path: str, body: bytes, headers: dict[str, str], t0: float,
                    decision: Decision) -> Exchange:
        """Response head (and a stream's first chunk) within ``first_byte`` s; raises ``_Failed``."""
        exchange: Exchange | None = None
        try:
            async with asyncio.timeout(self.timeouts.first_byte):
                exchange = await self.http.request(target, path, body, headers)
                decision.ttfb_ms = (self._clock() - t0) * 1e3
                head = exchange.head.result()
                if head.status < 500 and head.get("content-type").startswith("text/event-stream"):
                    await exchange.first
        except TimeoutError as exc:
            if exchange is not None:
                exchange.close()  # the engine sees the disconnect and aborts the request
            raise _Failed("timeout", 504) from exc
        except UpstreamBroken as exc:
            raise _Failed("disconnected") from exc
        except (OSError, ValueError) as exc:  # refused, unreachable, connect timeout; a URL it cannot speak to
            raise _Failed("connect") from exc
        except BaseException:  # cancelled: our client went away while we waited
            if exchange is not None:
                exchange.close()
            raise
        if head.status >= 500:
            raw: bytes | None = None
            try:
                raw = await exchange.read_all(self.timeouts.idle)
            except (TimeoutError, UpstreamBroken):
                pass
            finally:
                exchange.release()
            raise _Failed(f"http_{head.status}", head.status, raw, head.get("content-type"))
        return exchange

    def _body_failed(self, timed_out: bool, result: Any, decision: Decision, *, streaming: bool) -> HTTPError:
        """The error a client gets when the upstream went silent or broke in the middle of an answer's body."""
        decision.outcome = "upstream_timeout" if timed_out else "upstream_broke"
        self._failed(result.target, "stream_timeout" if timed_out else "stream_broken")
        if streaming:
            return (GatewayTimeout(f"upstream sent nothing for {self.timeouts.idle:g} s; stream closed")
                    if timed_out else UpstreamFailed("upstream connection lost mid-stream"))
        what = "timed out" if timed_out else "connection lost"
        return (GatewayTimeout if timed_out else UpstreamFailed)(f"upstream {what} while sending its answer")

    def _whole_answer(self, raw: bytes, status: int, headers: dict[str, str], decision: Decision,
                      tap: Callable[[bytes], None] | None, t0: float) -> tuple[web.Response, bool, Usage | None]:
        """A body read whole (not an event stream): the response, whether it succeeded, its usage."""
        self.metrics.ttfb_seconds.observe(self._clock() - t0)
        if tap is not None:
            tap(raw)
        ok = status < 400
        decision.outcome = "ok" if ok else f"http_{status}"
        return web.Response(body=raw, status=status, headers=headers), ok, parse_usage(raw) if ok else None

    async def _relay(self, request: web.Request, exchange: Exchange, llm_req: LLMRequest, result: Any,
                     decision: Decision, strip_usage: bool, t0: float, admission: Admission | None = None,
                     label: str | None = None) -> web.StreamResponse:
        """The answer to the client: read whole, or an event stream whose chunks ``SseRelay`` writes as they come.
        However it ends, the observer hears the engine's usage or, without one, the content tokens relayed."""
        head = exchange.head.result()
        status = decision.status = head.status
        content_type = head.get("content-type", "application/json")
        label = label or llm_req.request_id
        out_headers = {"Content-Type": content_type, "x-request-id": label, "x-llmd-endpoint": result.target}
        observer = self.observer if admission is not None else None
        tap = observer.tap(admission) if observer is not None and admission is not None else None
        ok, usage, close = False, None, False
        resp: web.StreamResponse | None = None
        relay: SseRelay | None = None
        try:
            if not content_type.startswith("text/event-stream"):
                try:
                    raw = await exchange.read_all(self.timeouts.idle)
                except (TimeoutError, UpstreamBroken) as exc:
                    close = True
                    failure = self._body_failed(isinstance(exc, TimeoutError), result, decision, streaming=False)
                    return error_response(failure, label)
                answer, ok, usage = self._whole_answer(raw, status, out_headers, decision, tap, t0)
                request[ANSWERED_KEY] = status
                return answer
            out_headers["Cache-Control"] = "no-cache"
            resp = web.StreamResponse(status=status, headers=out_headers)
            chunked = request.version >= (1, 1)  # an HTTP/1.0 client gets the bytes as they are, then a close
            if chunked:
                resp.enable_chunked_encoding()
            await resp.prepare(request)
            if request.transport is None:
                raise ConnectionResetError
            relay = SseRelay(request.transport, exchange, strip_usage=strip_usage, tap=tap, chunked=chunked,
                             on_first=lambda: self.metrics.ttfb_seconds.observe(self._clock() - t0))
            exchange.attach(relay)
            try:
                await relay.wait(self.timeouts.idle)
            except (TimeoutError, UpstreamBroken) as exc:
                close = True
                if relay.client_gone:
                    raise ConnectionResetError from exc
                err = self._body_failed(isinstance(exc, TimeoutError), result, decision, streaming=True)
                resp[STATUS_KEY] = err.status
                await resp.write(sse_error(err))
                await resp.write_eof()
                return resp
            ok = status < 400
            decision.outcome = "ok" if ok else f"http_{status}"
            request[ANSWERED_KEY] = status
            with contextlib.suppress(ConnectionResetError):  # gone after the last event: the answer was complete
                await resp.write_eof()
            return resp
        except asyncio.CancelledError:
            close = True
            ok = self._had_all(request, relay, status, decision) and status < 400
            if ANSWERED_KEY not in request:
                self._disconnected(decision, exchange)
            raise
        except ConnectionResetError:  # writing to a client that went away
            close = True
            if resp is not None and self._had_all(request, relay, status, decision):
                ok = status < 400
                return resp
            self._disconnected(decision, exchange)
            if resp is None:
                return web.Response(status=499)
            resp[STATUS_KEY] = 499
            return resp
        finally:
            if close:
                exchange.close()  # the engine sees the disconnect and aborts the request
            else:
                exchange.release()
            if ok and self.outliers is not None:
                self.outliers.success(result.target)
            if relay is not None:
                usage = relay.usage()  # also of a stream cut short: the engine's usage if it came
            self._complete(llm_req, result, decision, ok, usage)
            if observer is not None and admission is not None:
                observer.observe(admission, (usage.prompt_tokens, usage.completion_tokens) if usage else None,
                                 relay.tokens if relay is not None else 0, reached_engine=status < 400)

    @staticmethod
    def _had_all(request: web.Request, relay: SseRelay | None, status: int, decision: Decision) -> bool:
        """Whether a client that left had its whole answer (up to ``[DONE]``): then it was answered, not cut."""
        if ANSWERED_KEY not in request and relay is not None and relay.complete:
            request[ANSWERED_KEY] = status
            decision.outcome = "ok" if status < 400 else f"http_{status}"
        return ANSWERED_KEY in request

    def _disconnected(self, decision: Decision, upstream: Exchange) -> None:
        decision.outcome = "client_disconnected"
        self.metrics.client_disconnects.inc()
        upstream.close()  # drop the connection so the engine aborts the request

    def _complete(self, llm_req: LLMRequest, result: Any, decision: Decision, ok: bool, usage: Usage | None) -> None:
        if self.activity is not None:
            self.activity.finished(result.target)
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
