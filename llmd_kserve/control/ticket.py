"""A request's ticket: what the director knows of one admitted request from ``admit`` to ``settle``, and each
scheduling of it (``Placement``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from llmd_kserve.control.decisions import Decision
from llmd_kserve.control.requests import ParsedRequest
from llmd_kserve.control.stalls import Watch
from llmd_kserve.control.usage import Usage
from llmd_kserve.governance.gateway import Admission
from llmd_kserve.governance.keys import VirtualKey
from llmd_kserve.scheduling.scheduler import Scheduler, SchedulingResult
from llmd_kserve.types import EndpointId, LLMRequest, Objective

Identity = tuple[VirtualKey | None, str | None]
"""(virtual key, principal) of an authenticated request."""


@dataclass(slots=True, eq=False)
class Placement:
    """One scheduling of a ticket: the result, the scheduler that made it, and its decision record."""

    scheduler: Scheduler
    result: SchedulingResult
    decision: Decision
    started: float
    prefill_open: bool
    done: bool = False
    watch: Watch | None = None
    """Its stall watch (``control.stalls``), when the front end sees answers begin."""


@dataclass(slots=True, eq=False)
class Ticket:
    """One admitted request, from ``admit`` to ``settle``."""

    parsed: ParsedRequest
    request: LLMRequest
    """``request_id`` is the director's own id (audit, decisions, in-flight load key on it)."""
    client_request_id: str | None
    """The client's ``x-request-id``: forwarded and echoed, a label only."""
    key: VirtualKey | None
    principal: str | None
    client: str | None
    admission: Admission | None
    placement: Placement | None = None
    attempts: int = 0
    settled: bool = False
    usage: Usage | None = None
    """The engine's ``usage`` of the answer, when it sent one (the transport records it)."""
    relayed_tokens: int = 0
    """Content tokens relayed to the client (metering without ``usage``)."""
    reached_engine: bool = False
    """Whether an engine worked on the request (metering: an estimate is charged only then)."""
    prompt_tokens: int | None = None
    """Prompt tokens when known (counted, or sent as ids): what governance reserves."""
    pin: EndpointId | None = None
    """The only endpoint it may go to (the one holding its ``previous_response_id``), or None."""
    observe: Callable[[bytes], None] | None = None
    """Shown the answer's bytes as they are relayed (the Responses API learns response ids), or None."""
    arrived: float = 0.0
    """When the director got it (its clock): SLO times count from here."""
    first_at: float | None = None
    """When its answer began (first streamed token, or the whole body), for the SLO counts."""
    waited_s: float = 0.0
    """Seconds ``latency-slo-admitter`` held it back (``onMiss: queue``)."""
    objective: Objective | None = None
    """Its priority and latency targets as the client sent them (``control.slo``); the request's own shrinks by
    the time it waited."""

    @property
    def label(self) -> str:
        return self.client_request_id or self.request.request_id


class Hold(Exception):  # noqa: N818 - a signal to wait, not an error
    """``schedule``: the request is held back (``latency-slo-admitter``, ``onMiss: queue``); try again after
    ``delay_s`` (:meth:`Director.place` does)."""

    def __init__(self, delay_s: float) -> None:
        super().__init__(delay_s)
        self.delay_s = delay_s
