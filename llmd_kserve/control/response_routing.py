"""A ``/v1/responses`` ticket placed by its ``previous_response_id`` (both front ends): pinned to the endpoint that
stored the previous response, and its answer's response id learnt."""

from __future__ import annotations

from llmd_kserve.control.responses import ResponseHomes
from llmd_kserve.control.runtime import Runtime
from llmd_kserve.control.ticket import Ticket
from llmd_kserve.types import EndpointId


def response_homes(state: Runtime) -> ResponseHomes:
    """A front end's table of response ids, written to the shared store too when sessions are shared."""
    shared = state.shared_sessions
    return ResponseHomes(on_learn=shared.remember_response if shared is not None else None)


async def recall_response(homes: ResponseHomes, state: Runtime, ticket: Ticket) -> None:
    """With shared sessions: a ``previous_response_id`` another replica learnt is read from the store first."""
    if state.shared_sessions is not None:
        await state.shared_sessions.recall_response(homes, ticket.parsed.body)


def place_response(homes: ResponseHomes, state: Runtime, ticket: Ticket) -> None:
    """Pin ``ticket`` to the endpoint holding its ``previous_response_id`` (404 when that endpoint left the pool)
    and learn the response id of its answer."""
    body = ticket.parsed.body
    ticket.pin = homes.pin(body, [e.id for e in state.pool.snapshot])

    def answered_by() -> EndpointId | None:
        p = ticket.placement
        return p.result.target if p is not None and p.decision.status == 200 else None

    ticket.observe = homes.watcher(body, answered_by)
