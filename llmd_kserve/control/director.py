"""The director: one request's control flow under either front end, free of any transport.

``admit`` (parse once, authenticate, limits, count tokens once, governance) → ``schedule`` (per attempt; the
ticket keeps the scheduler that made each result) → ``failed`` (an attempt that got no answer) or
``prefill_done`` (the P/D prefill leg ended) → ``settle`` (exactly once per ticket; later calls do nothing).
Errors are the OpenAI-shaped ``HTTPError``s: 400/401/403/404/413, 429 with ``Retry-After``, 503.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import replace

from llmd_kserve.control import slo
from llmd_kserve.control.requests import (
    ParsedRequest,
    RouteKind,
    count_prompt,
    known_prompt_tokens,
    request_id,
    validate_request,
)
from llmd_kserve.control.runtime import Runtime
from llmd_kserve.control.sessions import continues_session
from llmd_kserve.control.ticket import Hold, Identity, Placement, Ticket
from llmd_kserve.control.usage import Usage
from llmd_kserve.errors import NoEndpoint, NoEndpointError
from llmd_kserve.governance.keys import VirtualKey
from llmd_kserve.scheduling.scheduler import SchedulingResult
from llmd_kserve.scheduling.slo_admitter import SloUnmet
from llmd_kserve.types import EndpointId, EndpointState, LLMRequest, RequestOutcome

log = logging.getLogger(__name__)
OFFLOAD_BYTES = 256 * 1024
"""Bodies larger than this are decoded, checked and tokenized in a worker thread, off the event loop."""
OUTLIER_REASONS = frozenset({"connect", "disconnected", "timeout", "stream_broken", "stream_timeout"})
_ids = random.Random()  # request ids: 128 random bits, seeded from the OS (no urandom call per request)


def new_request_id() -> str:
    return f"{_ids.getrandbits(128):032x}"



class Director:
    """Admits, schedules and settles requests over one :class:`Runtime`."""

    def __init__(self, runtime: Runtime, *, clock: Callable[[], float] = time.perf_counter) -> None:
        self.rt = runtime
        self.governance = runtime.governance
        self._clock = clock
        scraper = runtime.scraper
        self.activity = scraper if scraper.adaptive else None
        """Told which endpoints have requests on them (the adaptive scraper), or None."""
        self.stalls = runtime.stalls if runtime.stalls.watches_attempts else None
        """Watches attempts for stalls (``control.stalls``), or None."""

    def authenticate(self, headers: Mapping[str, str]) -> Identity:
        """(virtual key, principal); 401 when keys are configured and the request has none that is valid."""
        return self.governance.authenticate(headers)

    def _parse(self, raw: bytes, kind: RouteKind, key: VirtualKey | None,
               ) -> tuple[ParsedRequest, tuple[int, ...] | None, int | None]:
        """Decode, validate and limit; the prompt is tokenized once, when a limit or metering needs its count."""
        gov, tok = self.governance, self.rt.tokenizer
        parsed = validate_request(raw, kind, self.rt.models)
        gov.check_policy(parsed)
        if tok is not None and gov.needs_token_count(parsed, key):
            counted = count_prompt(parsed, tok)
            if counted is not None:
                gov.check_prompt_tokens(parsed, counted[0])
                return parsed, counted[1], counted[0]
        return parsed, parsed.token_ids, None

    def prepare(self, headers: Mapping[str, str], raw: bytes, kind: RouteKind, client: str | None,
                identity: Identity) -> Ticket:
        """The synchronous part of admission (thread-safe: a big body runs it in a worker thread): the client's
        request id, decode and validate, limits, the prompt's tokens counted once (their ids go on to the scheduler)."""
        client_rid = request_id(headers)
        key, principal = identity
        arrived = self._clock()
        objective = slo.read_objective(headers)
        parsed, token_ids, counted = self._parse(raw, kind, key)
        body = parsed.body
        session = headers.get("x-session-id") or body.get("user")
        llm_req = LLMRequest(request_id=new_request_id(), model=parsed.model or "", body=body, kind=parsed.kind,
                             token_ids=token_ids, max_tokens=parsed.max_tokens or 16,
                             session_id=session if isinstance(session, str) else None, headers=headers,
                             prompt=parsed.prompt, objective=objective)
        prompt_tokens = counted if counted is not None else known_prompt_tokens(parsed, token_ids)
        return Ticket(parsed, llm_req, client_rid, key, principal, client, None, prompt_tokens=prompt_tokens,
                      arrived=arrived, objective=objective)

    @property
    def admits_synchronously(self) -> bool:
        """Whether :meth:`prepare` alone admits a request (no engine rendering, no gateway part configured)."""
        return self.rt.render is None and not self.governance.gateway.active and self.rt.shared_sessions is None

    async def admit(self, headers: Mapping[str, str], raw: bytes, kind: RouteKind, client: str | None, *,
                    identity: Identity | None = None) -> Ticket:
        """Everything before scheduling; raises an ``HTTPError`` (refusals are audited by governance).
        ``identity``: what :meth:`authenticate` said when the transport asked already."""
        identity = identity if identity is not None else self.authenticate(headers)
        big = len(raw) > OFFLOAD_BYTES
        if big:  # decoding, tokenizing and the text work on a big body would stall every other request
            ticket = await asyncio.to_thread(self.prepare, headers, raw, kind, client, identity)
        else:
            ticket = self.prepare(headers, raw, kind, client, identity)
        parsed = ticket.parsed
        if ticket.request.token_ids is None and self.rt.render is not None:
            token_ids = await self.rt.render.token_ids(parsed)
            self.governance.check_prompt_tokens(parsed, len(token_ids or ()))
            ticket.request = replace(ticket.request, token_ids=token_ids)
            ticket.prompt_tokens = known_prompt_tokens(parsed, token_ids)
        if self.rt.shared_sessions is not None:  # another replica may have placed this session: its home first
            await self.rt.shared_sessions.recall(ticket.request)
        if self.governance.gateway.active:
            ticket.admission = await self.governance.admit(
                ticket.key, ticket.request.request_id, parsed, client, client_request_id=ticket.client_request_id,
                prompt_tokens=ticket.prompt_tokens, offload=big,
                turn=continues_session(self.rt.scheduler, ticket.request))
        return ticket

    async def ready(self) -> None:
        """Before the first attempt: after an idle spell, scrape the idle endpoints first."""
        if self.activity is not None:
            fresh = self.activity.refresh_idle()
            if fresh is not None:
                await fresh

    def schedule(self, ticket: Ticket, exclude: Collection[EndpointId] = (),
                 candidates: Sequence[EndpointState] | None = None, *, may_wait: bool = False) -> SchedulingResult:
        """Pick the endpoint (and prefill endpoint) for the next attempt; ``NoEndpoint`` (503) when none fits, 429
        when ``latency-slo-admitter`` sheds it; ``may_wait``: raise :class:`Hold` while it may still wait."""
        rt, t0 = self.rt, self._clock()
        states = rt.endpoint_states() if candidates is None else candidates
        if ticket.pin is not None:
            states = [s for s in states if s.id == ticket.pin]
        ids = [s.id for s in states if s.id not in exclude]
        skip = set(exclude) | rt.outliers.ejected(ids) | rt.stalls.suspects(ids)
        sched = rt.scheduler.acquire()
        try:
            result = sched.schedule(ticket.request, states, skip)
        except SloUnmet as exc:
            rt.scheduler.release(sched)
            if may_wait and exc.max_wait_s > ticket.waited_s:
                raise Hold(min(exc.poll_s, exc.max_wait_s - ticket.waited_s)) from None
            slo.count(rt.metrics, ticket.objective, "shed")
            raise slo.refusal(exc) from None
        except NoEndpointError as exc:
            rt.scheduler.release(sched)
            raise NoEndpoint(f"No endpoint available: {exc}") from None
        sched_s = self._clock() - t0
        rt.metrics.scheduling_seconds.observe(sched_s)
        rt.metrics.decision_count(result.target, result.profile).inc()
        if rt.headroom is not None and result.ttft_headroom_s is not None:
            rt.headroom.observe(result.ttft_headroom_s)
        attempt = ticket.attempts
        decision = rt.decisions.add(ticket.request.request_id, attempt, result, sched_s * 1e3,
                                    ticket.client_request_id)
        if attempt == 0:
            slo.count(rt.metrics, ticket.objective, "admitted")
            self.governance.audit(ticket.request.request_id, ticket.parsed, result.target, ticket.principal,
                                       ticket.client)
        else:
            rt.metrics.retries.inc()
        ticket.attempts += 1
        if rt.shared_sessions is not None:
            rt.shared_sessions.remember(ticket.request, result.target)
        ticket.placement = Placement(sched, result, decision, t0, result.prefill is not None)
        if self.stalls is not None and result.prefill is None:
            state = next(s for s in states if s.id == result.target)
            ticket.placement.watch = self.stalls.begin(state, result.prompt_tokens, result.predicted_cached_tokens,
                                                       ticket.request.max_tokens, bool(ticket.parsed.stream))
        if self.activity is not None:
            self.activity.started(result.target)
            if result.prefill is not None:
                self.activity.started(result.prefill)
        return result

    async def place(self, ticket: Ticket, exclude: Collection[EndpointId] = ()) -> SchedulingResult:
        """:meth:`schedule`, waiting while ``latency-slo-admitter`` holds the request back (``onMiss: queue``); the
        wait counts against its TTFT target."""
        band = None  # set while held back (counted in llmd_router_queue_depth)
        try:
            while True:
                try:
                    return self.schedule(ticket, exclude, may_wait=True)
                except Hold as hold:
                    if band is None:
                        band = ticket.objective.band if ticket.objective is not None else "0"
                        self.rt.held.enter(band)
                    if ticket.waited_s == 0:
                        slo.count(self.rt.metrics, ticket.objective, "queued")
                    await asyncio.sleep(hold.delay_s)
                    ticket.waited_s = self._clock() - ticket.arrived
                    if ticket.objective is not None:
                        ticket.request = replace(ticket.request,
                                                 objective=slo.spent(ticket.objective, ticket.waited_s))
        finally:
            if band is not None:
                self.rt.held.leave(band)

    def answer_began(self, ticket: Ticket) -> None:
        """The answer's first token (or whole body) is on its way to the client (the SLO counts time it)."""
        if ticket.first_at is None:
            ticket.first_at = self._clock()

    def has_alternative(self, exclude: Collection[EndpointId]) -> bool:
        """Whether an endpoint outside ``exclude`` is neither suspect nor ejected (a retry has somewhere to go)."""
        rt = self.rt
        return any(e.id not in exclude and e.id not in rt.stalls.suspect and not rt.outliers.is_ejected(e.id)
                   for e in rt.pool.snapshot)

    def first_byte(self, ticket: Ticket) -> None:
        """The current attempt's answer began (its stall budget stops)."""
        p = ticket.placement
        if p is not None and p.watch is not None and self.stalls is not None:
            self.stalls.first_byte(p.watch)

    def prefill_done(self, ticket: Ticket, ok: bool, prompt_tokens: int = 0, cached_tokens: int | None = None) -> None:
        """The prefill leg ended (also when it failed or was cancelled): release its charge now. Idempotent."""
        p = ticket.placement
        if p is None or not p.prefill_open:
            return
        p.prefill_open = False
        if self.activity is not None and p.result.prefill is not None:
            self.activity.finished(p.result.prefill)
        try:
            p.scheduler.on_prefill_complete(ticket.request, p.result, RequestOutcome(
                ok=ok, prompt_tokens=prompt_tokens, cached_tokens=cached_tokens))
        except Exception:  # bookkeeping must not fail the request
            log.exception("releasing the prefill leg of %s failed", ticket.request.request_id)

    def failed(self, ticket: Ticket, reason: str, status: int | None = None) -> None:
        """The current attempt got no answer (``reason``: connect, timeout, http_5xx, ...): count it, tell the
        outlier ejector, and complete it on its scheduler as failed."""
        p = ticket.placement
        if p is None or p.done:
            return
        p.decision.outcome = reason
        if status is not None:
            p.decision.status = status
        self.note_failure(p.result.target, reason)
        self._complete(ticket, p, False, None, answered=False)

    def note_failure(self, endpoint: EndpointId, reason: str) -> None:
        self.rt.metrics.upstream_errors.labels(endpoint, reason).inc()
        if reason in OUTLIER_REASONS:
            self.rt.outliers.failure(endpoint, reason)

    def _complete(self, ticket: Ticket, p: Placement, ok: bool, usage: Usage | None,
                  served: EndpointId | None = None, *, answered: bool = True) -> None:
        """Close one attempt on the scheduler that made it; ``answered``: an engine's answer began (then cached
        tokens are accounted and the decision gets them)."""
        p.done = True
        if self.stalls is not None:
            self.stalls.end(p.watch)
        self.prefill_done(ticket, ok)
        if self.activity is not None:
            self.activity.finished(p.result.target)
        if ok:
            self.rt.outliers.success(p.result.target)
        outcome = RequestOutcome(ok=False)
        if answered:
            cached, prompt, completion = None, 0, 0
            if usage is not None:
                prompt, completion = usage.prompt_tokens, usage.completion_tokens
                if usage.prompt_tokens_details is not None:
                    cached = usage.prompt_tokens_details.cached_tokens
            p.decision.cached_tokens, p.decision.prompt_tokens = cached, (prompt or None)
            self.rt.metrics.observe_cached(served or p.result.target, p.result.predicted_cached_tokens, cached,
                                           prompt)
            outcome = RequestOutcome(ok=ok, prompt_tokens=prompt or p.result.prompt_tokens, cached_tokens=cached,
                                     completion_tokens=completion)
        try:
            p.scheduler.on_complete(ticket.request, p.result, outcome)
        finally:
            self.rt.scheduler.release(p.scheduler)

    def _observe_slo(self, ticket: Ticket, usage: Usage | None) -> None:
        first = ticket.first_at
        assert first is not None
        tokens = usage.completion_tokens if usage is not None else ticket.relayed_tokens
        tpot = ((self._clock() - first) / (tokens - 1)
                if ticket.parsed.stream and tokens is not None and tokens >= 2 else None)
        slo.observe_answer(self.rt.metrics, ticket.objective, first - ticket.arrived, tpot)

    def settle(self, ticket: Ticket, status: int, usage: Usage | None = None,
               served: EndpointId | None = None) -> Awaitable[None] | None:
        """The request ended with ``status`` (any ending; ``usage``: the engine's, else the ticket's). Completes the
        last attempt on the scheduler that made it and settles governance; returns governance's audit and metering
        work (await it, or let it run in the background), or None. Once per ticket: later calls do nothing."""
        if ticket.settled:
            return None
        ticket.settled = True
        usage = usage if usage is not None else ticket.usage
        p = ticket.placement
        if ticket.objective is not None and status < 400 and ticket.first_at is not None:
            self._observe_slo(ticket, usage)
        if p is not None and not p.done:
            self._complete(ticket, p, status < 400, usage, served, answered=p.decision.status is not None)
        adm = ticket.admission
        if adm is None:
            return None
        gov = self.governance
        gov.observe(adm, (usage.prompt_tokens, usage.completion_tokens) if usage is not None else None,
                    ticket.relayed_tokens, ticket.reached_engine)
        gov.release(adm)
        endpoint = served or (p.result.target if p is not None else None)
        return self.rt.spawn(gov.finish(adm, status, endpoint))
