"""The EPP's decision for one request over the director: route allowlist, admit, subset hint, shed or schedule, settle.

Transport-free: :class:`EndpointPicker` takes headers and the whole body and returns a :class:`Pick` or a
:class:`Reject`; the ext_proc exchange (``epp.exchange``) turns those into Envoy messages. Admission, scheduling and
settling are the director's (``control.director``), the same as behind the HTTP router: keys, limits, flow control,
guardrails, the audit trail and the scheduler config's hot reload apply here too.

Only the OpenAI routes reach an engine (404 otherwise); a client's ``kv_transfer_params`` are dropped from the
decoded body, and the engine gets a body the EPP encoded itself, never the client's bytes.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from llmd_kserve.control import slo
from llmd_kserve.control.director import Director
from llmd_kserve.control.requests import Kind, RouteKind
from llmd_kserve.control.response_routing import place_response, recall_response, response_homes
from llmd_kserve.control.ticket import Identity, Ticket
from llmd_kserve.control.usage import Usage
from llmd_kserve.disagg.protocol import has_client_params, strip_client_params
from llmd_kserve.epp.metrics import EppMetrics
from llmd_kserve.epp.protocol import host_port, in_subset
from llmd_kserve.errors import ConfigError, HTTPError
from llmd_kserve.gateway_routes import INFERENCE_PATHS, NOT_FOUND_MESSAGE, OTHER_PATHS
from llmd_kserve.types import EndpointId, EndpointState

log = logging.getLogger(__name__)
_encode = msgspec.json.Encoder().encode
PRIORITY_HEADER = slo.PRIORITY_HEADER
"""Requests with a negative priority are sheddable (GIE's InferenceObjective priority < 0): 429 when saturated."""
_REASONS = {401: "unauthorized", 403: "forbidden", 404: "not_found", 413: "request_too_large", 429: "rate_limited",
            503: "unavailable"}


class Headers(dict[str, str]):
    """Envoy's header map (names in lower case) looked up by any case, as the director reads HTTP headers."""

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        return dict.get(self, key.lower(), default)

    def __getitem__(self, key: str) -> str:
        return dict.__getitem__(self, key.lower())

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and dict.__contains__(self, key.lower())


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
    """Answer the client directly: ``status`` with an OpenAI-shaped body, ``reason`` and ``headers`` (e.g.
    ``Retry-After``) in headers."""

    status: int
    reason: str
    message: str
    type_: str | None = None
    param: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, exc: HTTPError) -> Reject:
        reason = getattr(exc, "reason", None) or _REASONS.get(exc.status, "invalid_request")
        return cls(exc.status, reason, exc.message, exc.type, exc.param, dict(getattr(exc, "headers", None) or {}))

    def body(self) -> bytes:
        type_ = self.type_ or {429: "RateLimitError", 503: "ServiceUnavailableError", 404: "NotFoundError",
                               413: "RequestTooLargeError"}.get(self.status, "BadRequestError")
        return _encode({"error": {"message": self.message, "type": type_, "param": self.param, "code": self.status}})


@dataclass(frozen=True, slots=True)
class Admitted:
    """A request that passed admission: ``body`` is what goes to the engine (``None``: relay the client's bytes,
    only for :data:`OTHER_PATHS`)."""

    kind: Kind | None
    ticket: Ticket | None = None
    body: bytes | None = None


@dataclass(slots=True)
class Pick:
    """A scheduled request; ``complete`` must be called once when its response ends (or the exchange dies)."""

    target: EndpointId
    prefill: EndpointId | None
    ticket: Ticket | None
    started: float
    done: bool = False
    status: int | None = None
    body: bytes | None = None
    """The body to forward (the EPP's own encoding); ``None``: the client's, unchanged."""


class EndpointPicker:
    """Schedules one request at a time on the event loop (the scheduler is synchronous and not thread-safe)."""

    def __init__(self, director: Director, *, endpoint_states: Callable[[], Sequence[EndpointState]] | None = None,
                 metrics: EppMetrics | None = None, saturation: Saturation = Saturation(),
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.director = director
        self.endpoint_states = endpoint_states or director.rt.endpoint_states
        rt_metrics = director.rt.metrics
        self.metrics = metrics or (rt_metrics if isinstance(rt_metrics, EppMetrics) else EppMetrics())
        self.saturation = saturation
        self._clock = clock
        self.response_homes = response_homes(director.rt)
        """Which endpoint stored each response (``previous_response_id`` goes there)."""
        self._rr = itertools.count()

    def candidates(self, subset: Sequence[str] | None) -> list[EndpointState]:
        states = list(self.endpoint_states())
        return states if subset is None else [s for s in states if in_subset(s.id, subset)]

    def _route(self, headers: Mapping[str, str]) -> tuple[RouteKind, Identity, Headers] | Admitted | Reject:
        """The path allowlist, then the caller's key (401 before the body is looked at)."""
        path = headers.get(":path", "").split("?", 1)[0]
        kind: RouteKind | None = INFERENCE_PATHS.get(path)
        if kind is None and path not in OTHER_PATHS:
            return Reject(404, "not_found", NOT_FOUND_MESSAGE)
        any_case = Headers(headers)
        try:
            identity = self.director.authenticate(any_case)
        except HTTPError as exc:
            return Reject.of(exc)
        return (kind, identity, any_case) if kind is not None else Admitted(None)

    def _admitted(self, ticket: Ticket) -> Admitted:
        forward = ticket.parsed.body
        if has_client_params(forward):  # decided on the decoded body: an escaped key cannot slip through
            self.metrics.client_params_stripped.inc()
            log.info("request %s: dropped client-supplied kv_transfer_params", ticket.label)
            forward = strip_client_params(forward)
        return Admitted(ticket.request.kind, ticket, _encode(forward))

    async def admit(self, headers: Mapping[str, str], body: bytes) -> Admitted | Reject:
        """The director's whole admission (keys, limits, tokens, rate limits, flow control, audit)."""
        route = self._route(headers)
        if not isinstance(route, tuple):
            return route
        try:
            kind, identity, any_case = route
            ticket = await self.director.admit(any_case, body, kind, headers.get("x-forwarded-for"), identity=identity)
            if kind == "responses":
                await recall_response(self.response_homes, self.director.rt, ticket)
            self._responses(kind, ticket)
        except HTTPError as exc:
            return Reject.of(exc)
        return self._admitted(ticket)

    def _responses(self, kind: RouteKind, ticket: Ticket) -> None:
        """A Responses request: pinned to the endpoint holding its ``previous_response_id`` (404 when that endpoint
        left the pool), its answer's id learnt from the response body (``response_mode`` full)."""
        if kind == "responses":
            try:
                place_response(self.response_homes, self.director.rt, ticket)
            except HTTPError:
                self.director.settle(ticket, 404)
                raise

    def admit_now(self, headers: Mapping[str, str], body: bytes) -> Admitted | Reject:
        """Admission without waiting: only when the director admits synchronously (no gateway part configured)."""
        route = self._route(headers)
        if not isinstance(route, tuple):
            return route
        if body and not self.director.admits_synchronously:  # (no body: refused as invalid right away)
            raise RuntimeError("this director admits asynchronously: use EndpointPicker.admit")
        try:
            kind, identity, any_case = route
            ticket = self.director.prepare(any_case, body, kind, headers.get("x-forwarded-for"), identity)
            self._responses(kind, ticket)
        except HTTPError as exc:
            return Reject.of(exc)
        return self._admitted(ticket)

    def pick(self, headers: Mapping[str, str], body: bytes, subset: Sequence[str] | None,
             admitted: Admitted | Reject | None = None) -> Pick | Reject:
        """Decide where one request goes; never raises for bad input (a :class:`Reject` says why). ``admitted``:
        :meth:`admit`'s answer (else :meth:`admit_now` runs here)."""
        out = self._pick(headers, body, subset, admitted)
        if isinstance(out, Reject):
            self.metrics.verdicts.labels(out.reason, str(out.status)).inc()
        else:
            self.metrics.verdicts.labels("picked", "").inc()
        return out

    def _pick(self, headers: Mapping[str, str], body: bytes, subset: Sequence[str] | None,
              admitted: Admitted | Reject | None) -> Pick | Reject:
        adm = self.admit_now(headers, body) if admitted is None else admitted
        if isinstance(adm, Reject):
            return adm
        ticket = adm.ticket
        out = self._place(headers, subset, adm)
        if isinstance(out, Reject) and ticket is not None:
            self.director.settle(ticket, out.status)  # governance hears the refusal: slot and tokens are freed
        return out

    def _place(self, headers: Mapping[str, str], subset: Sequence[str] | None, adm: Admitted) -> Pick | Reject:
        if subset is not None and not subset:
            return Reject(503, "subset_empty", "The gateway's endpoint subset for this request is empty.")
        candidates = self.candidates(subset)
        if not candidates:
            why = "subset_ineligible" if subset is not None else "no_ready_endpoint"
            return Reject(503, why, "No endpoint available: " + ("none of the subset is in the pool."
                                                                  if subset is not None else "the pool is empty."))
        ticket = adm.ticket
        if ticket is None:  # /v1/models, /health: any endpoint
            target = candidates[next(self._rr) % len(candidates)].id
            return Pick(target, None, None, self._clock(), done=True, body=adm.body)
        objective = ticket.objective
        if objective is not None and objective.sheddable and self.saturation.saturated(candidates):
            slo.count(self.director.rt.metrics, objective, "shed")
            return Reject(429, "saturated", "The pool is saturated and this request is sheddable (priority < 0).",
                          headers={"Retry-After": "1"})
        try:
            result = self.director.schedule(ticket, candidates=candidates)
        except HTTPError as exc:  # 429: shed by latency-slo-admitter (the EPP does not hold requests back)
            return Reject.of(exc) if exc.status == 429 else Reject(503, "no_ready_endpoint", exc.message)
        return Pick(result.target, result.prefill, ticket, self._clock(), body=adm.body)

    def response_started(self, pick: Pick, status: int) -> None:
        """Response headers arrived: the prefill leg (if any) is over — release the prefill endpoint's charge."""
        pick.status = status
        ticket = pick.ticket
        if ticket is None or ticket.placement is None:
            return
        decision = ticket.placement.decision
        decision.status = status
        decision.ttfb_ms = (self._clock() - pick.started) * 1e3
        self.director.answer_began(ticket)
        self.director.first_byte(ticket)
        self.director.prefill_done(ticket, status < 400)

    def complete(self, pick: Pick, *, ok: bool, usage: Usage | None = None, served: str | None = None,
                 outcome: str | None = None) -> None:
        """The response ended (or the exchange died): settle the ticket (scheduler load, cached tokens, governance's
        metering and audit). Idempotent."""
        if pick.done:
            return
        pick.done = True
        ticket = pick.ticket
        assert ticket is not None
        endpoint = pick.target
        if served is not None and host_port(pick.target) != served:  # the data plane fell back to another endpoint
            log.info("request %s was served by %s, not the picked %s", ticket.label, served, pick.target)
            self.metrics.served_elsewhere.inc()
            endpoint = next((s.id for s in self.endpoint_states() if host_port(s.id) == served), endpoint)
        status = pick.status or (200 if ok else 502)
        if not ok and status < 400:
            status = 502
        if ticket.placement is not None:
            ticket.placement.decision.outcome = outcome or ("ok" if ok else "failed")
        ticket.reached_engine = pick.status is not None and pick.status < 400
        self.director.settle(ticket, status, usage, endpoint)

