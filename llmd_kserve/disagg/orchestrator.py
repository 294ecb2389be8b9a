"""The P/D leg of a disaggregated request, run by the proxy before it sends (and streams) the decode hop.

The request body is decoded once (router governance) and passed along as a dict; the proxy encodes what it sends,
once per hop, at send time. Per attempt, after scheduling:

* :meth:`PDOrchestrator.client_body` (once per request): the decoded body minus any client-supplied
  ``kv_transfer_params`` - decided on the decoded object, so an escaped key cannot slip through;
* no ``result.prefill``: that body goes to ``result.target`` as is (:meth:`PDOrchestrator.local` counts it);
* ``result.prefill`` set: :meth:`PDOrchestrator.prefill_hop` sends step 1 to that endpoint (always one the scheduler
  picked from the pool: nothing the client sent names an address) and returns step 2's answer; the decode body is
  ``decode_body(body, answer.params)`` (step 3); both hops carry the same headers, hence the same ``x-request-id``;
* the prefill hop fails (``connect``, ``disconnected``, ``timeout``, ``http_<status>``: the categories of every other
  engine call; ``no_kv_params``: an answer without a KV handle): ``prefill_hop`` returns None, counted by reason, and
  the decode endpoint gets the body without ``kv_transfer_params`` (local prefill).

The prefill request goes over the same lean HTTP client (``lean_http.StreamClient``) as every other engine call.

``handoff`` says how the engines' KV connector hands KV over (:data:`HANDOFFS`): ``params`` (NixlConnector and
its kind: the prefill answer names its blocks, an answer without ``kv_transfer_params`` is a failed hop) or
``storage`` (ExampleConnector, LMCache with a shared backend: the connector stores the prompt's KV where the decode
engine looks it up by the prompt, the answer carries no ``kv_transfer_params`` and the decode body is the original).

When the prefill hop ends the proxy tells the director (``Director.prefill_done``), which releases the prefill
endpoint's in-flight charge at once, so that the prefill pool's load reflects queued prefills, not decodes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Literal

from llmd_kserve.disagg.metrics import DisaggMetrics
from llmd_kserve.disagg.protocol import (
    PrefillAnswer,
    PrefillAnswerError,
    encode,
    has_client_params,
    parse_prefill_answer,
    prefill_body,
    strip_client_params,
)
from llmd_kserve.lean_http import StreamClient, UpstreamBroken

log = logging.getLogger(__name__)

Handoff = Literal["params", "storage"]
HANDOFFS: tuple[Handoff, ...] = ("params", "storage")


class PrefillFailed(Exception):
    """The prefill hop did not produce a KV handle; ``reason`` labels the fallback metric."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


class PDOrchestrator:
    """Runs prefill hops over the router's lean HTTP client.

    ``kv_transfer_time(tokens)`` (the latency profile's) feeds ``llmd_router_pd_kv_transfer_predicted_seconds``;
    ``handoff`` is the connector's kind (see the module docstring).
    """

    def __init__(self, client: StreamClient, metrics: DisaggMetrics, *,
                 prefill_timeout_s: float = 30.0, kv_transfer_time: Callable[[int], float] | None = None,
                 clock: Callable[[], float] = time.perf_counter, handoff: Handoff = "params") -> None:
        if handoff not in HANDOFFS:
            raise ValueError(f"unknown KV handoff {handoff!r}; known: {', '.join(HANDOFFS)}")
        self.handoff: Handoff = handoff
        self.client = client
        self.metrics = metrics
        self._local = metrics.requests.labels("local")  # resolved once: counted on every local request
        self.timeout = prefill_timeout_s
        """Seconds the whole prefill hop may take."""
        self._kv_transfer_time = kv_transfer_time
        self._clock = clock

    def client_body(self, request_id: str, body: Mapping[str, Any]) -> Mapping[str, Any]:
        """The decoded client body without any ``kv_transfer_params`` (the same object when it had none)."""
        if not has_client_params(body):
            return body
        self.metrics.client_params_stripped.inc()
        log.info("request %s: dropped client-supplied kv_transfer_params", request_id)
        return strip_client_params(body)

    def local(self) -> None:
        """Count an attempt served without a prefill hop."""
        self._local.inc()

    async def prefill_hop(self, request_id: str, result: Any, path: str, body: Mapping[str, Any],
                          headers: Mapping[str, str]) -> PrefillAnswer | None:
        """Steps 1-2 on ``result.prefill``; the answer, or None when the hop failed (counted; never raises)."""
        self.metrics.requests.labels("disaggregated").inc()
        t0 = self._clock()
        try:
            answer = await self.prefill(result.prefill, path, body, headers)
        except PrefillFailed as exc:
            self.metrics.fallbacks.labels(exc.reason).inc()
            log.warning("request %s: prefill on %s failed (%s); prefilling on %s", request_id,
                        result.prefill, exc, result.target)
            return None
        self.metrics.prefill_seconds.observe(self._clock() - t0)
        prompt = answer.transferred_tokens  # the engine's own count; the router's tokenizer may differ
        moved = max(0, int(prompt if prompt is not None else result.prompt_tokens) - int(result.predicted_cached_tokens))
        self.metrics.kv_transfer_tokens.inc(moved)
        if self._kv_transfer_time is not None:
            self.metrics.kv_transfer_predicted.observe(self._kv_transfer_time(moved))
        return answer

    async def prefill(self, target: str, path: str, body: Mapping[str, Any],
                      headers: Mapping[str, str]) -> PrefillAnswer:
        """Step 1 and 2: send the prefill request, return the parsed answer; raises :class:`PrefillFailed`."""
        ex = None
        try:
            async with asyncio.timeout(self.timeout):
                ex = await self.client.request(target, path, encode(prefill_body(body)), headers)
                raw = await ex.read_all(self.timeout)
        except BaseException as exc:
            if ex is not None:
                ex.close()  # the engine sees the disconnect and aborts the prefill
            if isinstance(exc, TimeoutError):
                raise PrefillFailed("timeout", str(exc)) from exc
            if isinstance(exc, UpstreamBroken):
                raise PrefillFailed("disconnected", str(exc)) from exc
            if isinstance(exc, OSError | ValueError):  # refused, unreachable, connect timeout; a URL it cannot use
                raise PrefillFailed("connect", str(exc)) from exc
            raise
        status = ex.head.result().status
        ex.release()
        if status != 200:
            raise PrefillFailed(f"http_{status}", raw[:200].decode(errors="replace"))
        try:
            return parse_prefill_answer(raw, handle_required=self.handoff == "params")
        except PrefillAnswerError as exc:
            raise PrefillFailed("no_kv_params", str(exc)) from exc
