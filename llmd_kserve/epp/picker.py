"""The EPP's decision for one request: admit the OpenAI body, apply the subset hint, shed or schedule, and settle.

Transport-free: :class:`EndpointPicker` takes headers and the whole body and returns a :class:`Pick` or a
:class:`Reject`; the ext_proc exchange (``epp.exchange``) turns those into Envoy messages. The scheduler, its plugins,
the KV index and the metrics scraper are the router's own (``RouterState``), so a request scheduled here is scored
exactly as the Python router would score it.

Admission (:meth:`EndpointPicker.admit`, no shared state: safe in a worker thread) holds the gateway to the router's
rules: only the OpenAI routes reach an engine (404 otherwise), the body is validated and limited by the router's own
checks, and a client's ``kv_transfer_params`` are dropped from the decoded body. The engine gets a body the EPP
encoded itself, never the client's bytes.
"""

from __future__ import annotations

import itertools
import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import msgspec

from llmd_kserve.disagg.protocol import has_client_params, strip_client_params
from llmd_kserve.epp.metrics import EppMetrics
from llmd_kserve.epp.protocol import host_port, in_subset
from llmd_kserve.errors import ConfigError, HTTPError, NoEndpointError
from llmd_kserve.gateway_routes import INFERENCE_PATHS, NOT_FOUND_MESSAGE, OTHER_PATHS
from llmd_kserve.router.decisions import Decision, DecisionLog
from llmd_kserve.router.governance import Kind, ParsedRequest, validate_request
from llmd_kserve.types import EndpointId, EndpointState, LLMRequest, RequestOutcome

log = logging.getLogger(__name__)
_encode = msgspec.json.Encoder().encode
PRIORITY_HEADER = "x-llmd-priority"
"""Requests with a negative priority are sheddable (GIE's InferenceObjective priority < 0): 429 when saturated."""
Admit = Callable[[bytes, Kind], tuple[ParsedRequest, tuple[int, ...] | None]]
"""Decode, validate and limit a body as the router does; the prompt's token ids when it counted them."""


def validate_only(models: Callable[[], Sequence[str]]) -> Admit:
    """An :data:`Admit` with the router's validation but no size or token limits (for a bare picker)."""
    return lambda raw, kind: (validate_request(raw, kind, tuple(models())), None)


class SchedulerLike(Protocol):
    def schedule(self, request: LLMRequest, endpoints: Sequence[EndpointState], exclude: Any = ()) -> Any: ...
    def on_complete(self, request: LLMRequest, result: Any, outcome: RequestOutcome) -> None: ...
    def on_prefill_complete(self, request: LLMRequest, result: Any, outcome: RequestOutcome) -> None: ...


@dataclass(frozen=True, slots=True)
class Saturation:
    """GIE's saturation detector: an endpoint is saturated when its queue or its KV cache is over the threshold,
    or its metrics are stale; the pool is saturated when every candidate is."""

    queue_threshold: int = 5
    kv_threshold: float = 0.8

    def __post_init__(self) -> None:
        if self.queue_threshold < 0 or not 0 < self.kv_threshold <= 1:
            raise ConfigError("queue threshold must be >= 0 and kv threshold in (0, 1]", "saturation")

    def saturated(self, endpoints: Sequence[EndpointState]) -> bool:
        return all(e.metrics.stale or e.metrics.waiting >= self.queue_threshold
                   or e.metrics.kv_usage >= self.kv_threshold for e in endpoints)


@dataclass(frozen=True, slots=True)
class Reject:
    """Answer the client directly: ``status`` with an OpenAI-shaped body and ``reason`` in a header."""

    status: int
    reason: str
    message: str
    type_: str | None = None
    param: str | None = None

    def body(self) -> bytes:
        type_ = self.type_ or {429: "RateLimitError", 503: "ServiceUnavailableError", 404: "NotFoundError",
                               413: "RequestTooLargeError"}.get(self.status, "BadRequestError")
        return _encode({"error": {"message": self.message, "type": type_, "param": self.param, "code": self.status}})


@dataclass(frozen=True, slots=True)
class Admitted:
    """A request that passed admission: ``body`` is what goes to the engine (``None``: relay the client's bytes,
    only for :data:`OTHER_PATHS`)."""

    kind: Kind | None
    parsed: ParsedRequest | None = None
    token_ids: tuple[int, ...] | None = None
    body: bytes | None = None


@dataclass(slots=True)
class Pick:
    """A scheduled request; ``complete`` must be called once when its response ends (or the exchange dies)."""

    request: LLMRequest
    target: EndpointId
    prefill: EndpointId | None
    result: Any
    decision: Decision | None
    started: float
    done: bool = False
    prefill_done: bool = False
    body: bytes | None = None
    """The body to forward (the EPP's own encoding); ``None``: the client's, unchanged."""


class EndpointPicker:
    """Schedules one request at a time on the event loop (the scheduler is synchronous and not thread-safe)."""

    def __init__(self, scheduler: SchedulerLike | None, endpoint_states: Callable[[], Sequence[EndpointState]],
                 metrics: EppMetrics | None = None, decisions: DecisionLog | None = None, *,
                 saturation: Saturation = Saturation(), models: Callable[[], Sequence[str]] = tuple,
                 admit: Admit | None = None, clock: Callable[[], float] = time.perf_counter) -> None:
        self.scheduler = scheduler
        self.endpoint_states = endpoint_states
        self.metrics = metrics or EppMetrics()
        self.decisions = decisions or DecisionLog()
        self.saturation = saturation
        self.models = models
        self.check = admit or validate_only(models)
        self._clock = clock
        self._rr = itertools.count()

    def candidates(self, subset: Sequence[str] | None) -> list[EndpointState]:
        states = list(self.endpoint_states())
        return states if subset is None else [s for s in states if in_subset(s.id, subset)]

    def admit(self, headers: Mapping[str, str], body: bytes) -> Admitted | Reject:
        """The path allowlist, the router's validation and limits, and the body to forward (thread-safe)."""
        path = headers.get(":path", "").split("?", 1)[0]
        kind: Kind | None = INFERENCE_PATHS.get(path)
        if kind is None:
            if path in OTHER_PATHS:
                return Admitted(None)
            return Reject(404, "not_found", NOT_FOUND_MESSAGE)
        try:
            parsed, token_ids = self.check(body, kind)
        except HTTPError as exc:
            reason = "request_too_large" if exc.status == 413 else "invalid_request"
            return Reject(exc.status, reason, exc.message, exc.type, exc.param)
        forward = parsed.body
        if has_client_params(forward):  # decided on the decoded body: an escaped key cannot slip through
            self.metrics.client_params_stripped.inc()
            log.info("request %s: dropped client-supplied kv_transfer_params", headers.get("x-request-id", "-"))
            forward = strip_client_params(forward)
        return Admitted(kind, parsed, token_ids, _encode(forward))

    def pick(self, headers: Mapping[str, str], body: bytes, subset: Sequence[str] | None,
             admitted: Admitted | Reject | None = None) -> Pick | Reject:
        """Decide where one request goes; never raises for bad input (a :class:`Reject` says why). ``admitted``:
        :meth:`admit`'s answer when it already ran (off the event loop, for a big body)."""
        out = self._pick(headers, body, subset, admitted)
        if isinstance(out, Reject):
            self.metrics.verdicts.labels(out.reason, str(out.status)).inc()
        else:
            self.metrics.verdicts.labels("picked", "").inc()
        return out

    def _pick(self, headers: Mapping[str, str], body: bytes, subset: Sequence[str] | None,
              admitted: Admitted | Reject | None) -> Pick | Reject:
        adm = self.admit(headers, body) if admitted is None else admitted
        if isinstance(adm, Reject):
            return adm
        rid = uuid.uuid4().hex  # the EPP's own id (in-flight load keys on it); the client's is a label only
        client_rid = headers.get("x-request-id")
        if subset is not None and not subset:
            return Reject(503, "subset_empty", "The gateway's endpoint subset for this request is empty.")
        candidates = self.candidates(subset)
        if not candidates:
            why = "subset_ineligible" if subset is not None else "no_ready_endpoint"
            return Reject(503, why, "No endpoint available: " + ("none of the subset is in the pool."
                                                                  if subset is not None else "the pool is empty."))
        parsed, kind = adm.parsed, adm.kind
        if parsed is None or kind is None or self.scheduler is None:  # /v1/models, /health, or no scheduler
            target = candidates[next(self._rr) % len(candidates)].id
            return Pick(LLMRequest(rid, "", {}), target, None, None, None, self._clock(), done=True, body=adm.body)
        if _priority(headers) < 0 and self.saturation.saturated(candidates):
            return Reject(429, "saturated", "The pool is saturated and this request is sheddable (priority < 0).")
        session = headers.get("x-session-id") or parsed.body.get("user")
        token_ids = adm.token_ids if adm.token_ids is not None else parsed.token_ids
        llm_req = LLMRequest(request_id=rid, model=parsed.model or "", body=parsed.body, kind=kind,
                             token_ids=token_ids, max_tokens=parsed.max_tokens or 16,
                             session_id=session if isinstance(session, str) else None, headers=headers)
        t0 = self._clock()
        try:
            result = self.scheduler.schedule(llm_req, candidates)
        except NoEndpointError as exc:
            return Reject(503, "no_ready_endpoint", f"No endpoint available: {exc}")
        sched_s = self._clock() - t0
        self.metrics.scheduling_seconds.observe(sched_s)
        self.metrics.decisions.labels(result.target, result.profile).inc()
        decision = self.decisions.add(rid, 0, result, sched_s * 1e3, client_rid)
        return Pick(llm_req, result.target, result.prefill, result, decision, t0, body=adm.body)

    def response_started(self, pick: Pick, status: int) -> None:
        """Response headers arrived: the prefill leg (if any) is over — release the prefill endpoint's charge."""
        if pick.decision is not None:
            pick.decision.status = status
            pick.decision.ttfb_ms = (self._clock() - pick.started) * 1e3
        if pick.prefill is not None and not pick.prefill_done and self.scheduler is not None:
            pick.prefill_done = True
            self.scheduler.on_prefill_complete(pick.request, pick.result, RequestOutcome(ok=status < 400))

    def complete(self, pick: Pick, *, ok: bool, usage: Any = None, served: str | None = None,
                 outcome: str | None = None) -> None:
        """The response ended (or the exchange died): release in-flight load, account cached tokens. Idempotent."""
        if pick.done:
            return
        pick.done = True
        if pick.prefill is not None and not pick.prefill_done:
            self.response_started(pick, 200 if ok else 502)
        cached, prompt, completion = None, 0, 0
        if usage is not None:
            prompt, completion = usage.prompt_tokens, usage.completion_tokens
            if usage.prompt_tokens_details is not None:
                cached = usage.prompt_tokens_details.cached_tokens
        d = pick.decision
        if d is not None:
            d.outcome = outcome or ("ok" if ok else "failed")
            d.cached_tokens, d.prompt_tokens = cached, (prompt or None)
        endpoint = pick.target
        if served is not None and host_port(pick.target) != served:  # the data plane fell back to another endpoint
            log.info("request %s was served by %s, not the picked %s", pick.request.request_id, served, pick.target)
            self.metrics.served_elsewhere.inc()
            endpoint = next((s.id for s in self.endpoint_states() if host_port(s.id) == served), endpoint)
        self.metrics.observe_cached(endpoint, pick.result.predicted_cached_tokens, cached, prompt)
        assert self.scheduler is not None
        self.scheduler.on_complete(pick.request, pick.result, RequestOutcome(
            ok=ok, prompt_tokens=prompt or pick.result.prompt_tokens, cached_tokens=cached,
            completion_tokens=completion))


def _priority(headers: Mapping[str, str]) -> int:
    try:
        return int(headers.get(PRIORITY_HEADER, "0"))
    except ValueError:
        return 0
