"""Forwarding one admitted request: schedule (the director), send, retry before the first byte, stream back.

Upstream time limits (:class:`UpstreamTimeouts`): connecting (the lean client's), the first byte (response headers,
and for a stream its first event too) and the gap between two chunks. A first-byte timeout is retried on another
endpoint like a connect error; a stream that stalls after its first event ends with an OpenAI-shaped SSE error
event. Either way the director reports the endpoint to the outlier ejector (``control.outliers``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Collection, Mapping
from functools import partial
from typing import Any

import msgspec

from llmd_kserve.aio import Deadline
from llmd_kserve.control.decisions import Decision
from llmd_kserve.control.director import Director
from llmd_kserve.control.requests import ParsedRequest
from llmd_kserve.control.stalls import Watch
from llmd_kserve.control.ticket import Ticket
from llmd_kserve.control.usage import Usage, parse_usage
from llmd_kserve.disagg.metrics import DisaggMetrics
from llmd_kserve.disagg.orchestrator import PDOrchestrator
from llmd_kserve.disagg.protocol import PrefillAnswer, decode_body
from llmd_kserve.errors import GatewayTimeout, HTTPError, NoEndpoint, UpstreamFailed
from llmd_kserve.lean_http import Exchange, UpstreamBroken
from llmd_kserve.router.answer import Answer
from llmd_kserve.router.sse_relay import SseRelay
from llmd_kserve.router.timeouts import DEFAULT_TIMEOUTS, UpstreamTimeouts, sse_error
from llmd_kserve.types import EndpointId

log = logging.getLogger(__name__)
_encode = msgspec.json.Encoder().encode
_FORWARD_HEADERS = ("traceparent", "tracestate", "x-session-id", "x-gateway-destination-endpoint-subset")


def _expire(deadline: Deadline, watch: Watch, can_retry: Callable[[], bool]) -> None:
    """Ends a first-byte wait now (its endpoint stalled) when a retry has somewhere to go; nothing once the wait
    is over."""
    if not deadline.done and can_retry():
        deadline.expire()
        watch.interrupted = True


def _both(a: Callable[[bytes], None] | None, b: Callable[[bytes], None] | None) -> Callable[[bytes], None] | None:
    """One tap that feeds the answer's bytes to ``a`` and ``b`` (either may be None)."""
    if a is None or b is None:
        return a or b

    def tap(chunk: bytes) -> None:
        a(chunk)
        b(chunk)

    return tap


class _Failed(Exception):
    """An attempt failed before the first byte; ``response`` is what to relay if no retry is left."""

    def __init__(self, reason: str, status: int = 502, body: bytes | None = None, content_type: str = "") -> None:
        super().__init__(reason)
        self.reason, self.status, self.body, self.content_type = reason, status, body, content_type


class Proxy:
    """Sends each ticket's request to the endpoint the director picks, over the runtime's lean HTTP client."""

    def __init__(self, director: Director, *, max_attempts: int = 3, forward_authorization: bool = True,
                 inject_stream_usage: bool = True, timeouts: UpstreamTimeouts = DEFAULT_TIMEOUTS,
                 kv_transfer_time: Callable[[int], float] | None = None,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.director = director
        rt = director.rt
        self.metrics = rt.metrics
        self.max_attempts = max(1, max_attempts)
        self.forward_authorization = forward_authorization
        self.inject_stream_usage = inject_stream_usage
        self.timeouts = timeouts
        self._clock = clock
        self._loop: asyncio.AbstractEventLoop | None = None
        self.http = rt.http
        self.pd = PDOrchestrator(rt.http, DisaggMetrics.on(rt.metrics.registry), kv_transfer_time=kv_transfer_time,
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

    async def forward(self, answer: Answer, path: str, ticket: Ticket) -> None:
        """Schedule, send and relay one admitted request into ``answer``, retrying on another endpoint while no
        answer came (an error no retry cured: raised as ``HTTPError``). The client's ``x-request-id`` is forwarded
        and echoed as a label; the ticket records how the answer ended."""
        rid, label = ticket.request.request_id, ticket.label
        body, strip_usage = self._client_body(ticket.parsed, rid, ticket.admission is not None)
        local_body: bytes | None = None  # encoded once, at send time
        headers = {"Content-Type": "application/json", "x-request-id": label}
        client_headers = answer.headers
        for name in _FORWARD_HEADERS:
            if name in client_headers:
                headers[name] = client_headers[name]
        if self.forward_authorization and "Authorization" in client_headers:
            headers["Authorization"] = client_headers["Authorization"]
        director = self.director
        exclude: set[EndpointId] = set()
        last: _Failed | None = None
        stalled = False  # a stall interrupts one attempt per request at most (one retry elsewhere)
        await director.ready()
        for attempt in range(self.max_attempts):
            try:
                result = await director.place(ticket, exclude) if attempt == 0 else director.schedule(ticket, exclude)
            except NoEndpoint:
                if last is not None:
                    break
                raise
            placement = ticket.placement
            assert placement is not None
            try:
                if result.prefill is None:
                    self.pd.local()
                    if local_body is None:
                        local_body = _encode(body)
                    send_body = local_body
                else:
                    send_body = await self._disaggregated(ticket, result, path, body, headers)
                may_retry = not stalled and attempt + 1 < self.max_attempts
                exchange = await self._send(result.target, path, send_body, headers, placement.started,
                                            placement.decision, placement.watch, exclude if may_retry else None)
            except _Failed as fail:
                last = fail
                director.failed(ticket, fail.reason, fail.status)
                exclude.add(result.target)
                log.info("request %s: %s on %s (attempt %d)", rid, fail.reason, result.target, attempt + 1)
                stalled = stalled or fail.reason == "stall"
                continue
            except BaseException as exc:  # client gone while waiting for upstream headers (cancelled), or a bug:
                placement.decision.outcome = ("client_disconnected" if isinstance(exc, asyncio.CancelledError)
                                              else "error")
                if isinstance(exc, asyncio.CancelledError):
                    self.metrics.client_disconnects.inc()
                ticket.reached_engine = True  # sent: the engine may have worked on it
                raise
            return await self._relay(answer, exchange, ticket, result, placement.decision, strip_usage,
                                     placement.started)
        assert last is not None
        if last.body is not None:  # relay the last upstream error as it was
            return answer.whole(last.status, {"Content-Type": last.content_type or "application/json",
                                              "x-request-id": label}, last.body)
        if last.reason in ("timeout", "stall"):
            raise GatewayTimeout("All upstream attempts timed out before the first byte.")
        raise UpstreamFailed(f"All upstream attempts failed (last: {last.reason}).")

    async def _disaggregated(self, ticket: Ticket, result: Any, path: str, body: Mapping[str, Any],
                             headers: Mapping[str, str]) -> bytes:
        """The P/D leg: prefill hop, then the decode body (the prefill's ``kv_transfer_params``, or none: local
        prefill); the director hears when the leg ends (also when cancelled)."""
        answer: PrefillAnswer | None = None
        try:
            answer = await self.pd.prefill_hop(ticket.request.request_id, result, path, body, headers)
        finally:
            self.director.prefill_done(ticket, answer is not None, answer.prompt_tokens if answer else 0,
                                       answer.cached_tokens if answer else None)
        return _encode(decode_body(body, answer.params) if answer is not None else body)

    async def _send(self, target: EndpointId, path: str, body: bytes, headers: dict[str, str], t0: float,
                    decision: Decision, watch: Watch | None = None,
                    retry_exclude: Collection[EndpointId] | None = None) -> Exchange:
        """Response head (and a stream's first chunk) within ``first_byte`` s, or until ``watch`` finds the endpoint
        stalled (``control.stalls``) while a retry may go to an endpoint outside ``retry_exclude`` (None: no retry
        left); raises ``_Failed``."""
        exchange: Exchange | None = None
        try:
            loop = self._loop or self._bind_loop()
            async with Deadline(loop, self.timeouts.first_byte) as deadline:
                if watch is not None and retry_exclude is not None:
                    watch.interrupt = partial(_expire, deadline, watch,
                                              partial(self.director.has_alternative, retry_exclude))
                exchange = await self.http.request(target, path, body, headers)
                decision.ttfb_ms = (self._clock() - t0) * 1e3
                head = exchange.head.result()
                if head.status < 500 and head.get("content-type").startswith("text/event-stream"):
                    await exchange.first
            if watch is not None and self.director.stalls is not None:
                self.director.stalls.first_byte(watch)
        except TimeoutError as exc:
            if exchange is not None:
                exchange.close()  # the engine sees the disconnect and aborts the request
            raise _Failed("stall" if watch is not None and watch.interrupted else "timeout", 504) from exc
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

    def _bind_loop(self) -> asyncio.AbstractEventLoop:
        self._loop = asyncio.get_running_loop()
        return self._loop

    def _body_failed(self, timed_out: bool, result: Any, decision: Decision, *, streaming: bool) -> HTTPError:
        """The error a client gets when the upstream went silent or broke in the middle of an answer's body."""
        decision.outcome = "upstream_timeout" if timed_out else "upstream_broke"
        self.director.note_failure(result.target, "stream_timeout" if timed_out else "stream_broken")
        if streaming:
            return (GatewayTimeout(f"upstream sent nothing for {self.timeouts.idle:g} s; stream closed")
                    if timed_out else UpstreamFailed("upstream connection lost mid-stream"))
        what = "timed out" if timed_out else "connection lost"
        return (GatewayTimeout if timed_out else UpstreamFailed)(f"upstream {what} while sending its answer")

    def _whole_answer(self, answer: Answer, raw: bytes, status: int, headers: dict[str, str], decision: Decision,
                      tap: Callable[[bytes], None] | None, t0: float) -> Usage | None:
        """A body read whole (not an event stream): answered; its usage."""
        self.metrics.ttfb_seconds.observe(self._clock() - t0)
        if tap is not None:
            tap(raw)
        ok = status < 400
        decision.outcome = "ok" if ok else f"http_{status}"
        answer.whole(status, headers, raw)
        return parse_usage(raw) if ok else None

    def _first_token(self, ticket: Ticket, t0: float) -> None:
        self.metrics.ttfb_seconds.observe(self._clock() - t0)
        self.director.answer_began(ticket)

    async def _relay(self, answer: Answer, exchange: Exchange, ticket: Ticket, result: Any,
                     decision: Decision, strip_usage: bool, t0: float) -> None:
        """The answer to the client: read whole, or an event stream whose chunks ``SseRelay`` writes as they come.
        However it ends, the ticket records the engine's usage or, without one, the content tokens relayed."""
        head = exchange.head.result()
        status = decision.status = head.status
        content_type = head.get("content-type", "application/json")
        label = ticket.label
        out_headers = {"Content-Type": content_type, "x-request-id": label, "x-llmd-endpoint": result.target}
        answer.endpoint = result.target
        tap = _both(self.director.governance.tap(ticket.admission), ticket.observe)
        usage, close, started = None, False, False
        relay: SseRelay | None = None
        try:
            if not content_type.startswith("text/event-stream"):
                try:
                    raw = await exchange.read_all(self.timeouts.idle)
                except (TimeoutError, UpstreamBroken) as exc:
                    close = True
                    failure = self._body_failed(isinstance(exc, TimeoutError), result, decision, streaming=False)
                    answer.endpoint = None
                    return answer.error(failure, label)
                self.director.answer_began(ticket)
                usage = self._whole_answer(answer, raw, status, out_headers, decision, tap, t0)
                answer.answered = status
                return None
            out_headers["Cache-Control"] = "no-cache"
            transport = await answer.start_stream(status, out_headers)
            started = True
            relay = SseRelay(transport, exchange, strip_usage=strip_usage, tap=tap, chunked=answer.chunked,
                             on_first=partial(self._first_token, ticket, t0))
            exchange.attach(relay)
            stalls, watch = self.director.stalls, ticket.placement.watch if ticket.placement else None
            if stalls is not None and watch is not None:
                stalls.streaming(watch, lambda: exchange.last_data, lambda: relay is not None and relay.paused)
            try:
                await relay.wait(self.timeouts.idle)
            except (TimeoutError, UpstreamBroken) as exc:
                close = True
                if relay.client_gone:
                    raise ConnectionResetError from exc
                err = self._body_failed(isinstance(exc, TimeoutError), result, decision, streaming=True)
                answer.status = err.status
                await answer.write(sse_error(err))
                await answer.end()
                return None
            decision.outcome = "ok" if status < 400 else f"http_{status}"
            answer.answered = status
            with contextlib.suppress(ConnectionResetError):  # gone after the last event: the answer was complete
                await answer.end()
            return None
        except asyncio.CancelledError:
            close = True
            self._had_all(answer, relay, status, decision)
            if answer.answered is None:
                self._disconnected(decision, exchange)
            raise
        except ConnectionResetError:  # writing to a client that went away
            close = True
            if started and self._had_all(answer, relay, status, decision):
                return None
            self._disconnected(decision, exchange)
            answer.status = 499
            return None
        finally:
            if close:
                exchange.close()  # the engine sees the disconnect and aborts the request
            else:
                exchange.release()
            if relay is not None:
                usage = relay.usage()  # also of a stream cut short: the engine's usage if it came
            ticket.usage, ticket.reached_engine = usage, status < 400
            ticket.relayed_tokens = relay.tokens if relay is not None else 0

    @staticmethod
    def _had_all(answer: Answer, relay: SseRelay | None, status: int, decision: Decision) -> bool:
        """Whether a client that left had its whole answer (up to ``[DONE]``): then it was answered, not cut."""
        if answer.answered is None and relay is not None and relay.complete:
            answer.answered = status
            decision.outcome = "ok" if status < 400 else f"http_{status}"
        return answer.answered is not None

    def _disconnected(self, decision: Decision, upstream: Exchange) -> None:
        decision.outcome = "client_disconnected"
        self.metrics.client_disconnects.inc()
        upstream.close()  # drop the connection so the engine aborts the request
