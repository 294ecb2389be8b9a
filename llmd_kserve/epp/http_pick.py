"""The pick over plain HTTP: one request and one answer per client request, for an Envoy that calls the EPP
through ``ext_authz`` (``http_service``, the whole body attached) instead of ext_proc.

Envoy sends the client's method, path (after ``/pick``), headers and body; the answer is the decision:

* 200 with ``x-gateway-destination-endpoint: ip:port`` (P/D: also ``x-prefiller-host-port``) and
  ``x-llmd-endpoint``, which Envoy copies into the request before it routes it again (route cache cleared);
* a refusal as the router would send it (401, 429 with ``Retry-After``, 400, 413, 503 …, OpenAI-shaped body,
  ``x-llmd-reject-reason``), which Envoy passes to the client unchanged.

What this transport cannot do, next to ext_proc: the body goes to the engine as the client sent it (the EPP cannot
replace it), so a body carrying ``kv_transfer_params`` is refused (400) rather than cleaned; Envoy sends no
metadata, so there is no subset hint; and the EPP never hears of the answer, so each request stays charged to its
endpoint for :attr:`HttpPick.hold_s` (two metrics scrapes: by then the engine's own running/waiting/KV counters
show it) and is then settled as ``handed_off``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from aiohttp import web

from llmd_kserve.disagg.protocol import has_client_params
from llmd_kserve.epp.picker import Admitted, EndpointPicker, Pick, Reject
from llmd_kserve.epp.protocol import (
    DESTINATION_HEADER,
    ENDPOINT_HEADER,
    PICK_PREFIX,
    PREFILL_HEADER,
    REASON_HEADER,
    host_port,
)

log = logging.getLogger(__name__)


def _refusal(reject: Reject) -> web.Response:
    return web.Response(status=reject.status, body=reject.body(), content_type="application/json",
                        headers={REASON_HEADER: reject.reason, **reject.headers})


class HttpPick:
    """The aiohttp handler: admit, pick, answer; hand each pick over to the engines' metrics after ``hold_s``."""

    def __init__(self, picker: EndpointPicker, hold_s: float | None = None,
                 serving: Callable[[], bool] = lambda: True) -> None:
        self.picker, self.serving = picker, serving
        self.hold_s = 2 * picker.director.rt.settings.scrape_interval if hold_s is None else hold_s

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 << 20)
        app.router.add_route("*", PICK_PREFIX + "/{tail:.*}", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.Response:
        if not self.serving():  # a standby (leader election): the gateway should ask the leader
            return _refusal(Reject(503, "standby", "This Endpoint Picker is a standby; retry on the leader."))
        headers = {k.lower(): v for k, v in request.headers.items()}
        headers[":path"] = request.path_qs[len(PICK_PREFIX):] or "/"
        headers[":method"] = request.method
        body = await request.read()
        answer = await self.picker.admit(headers, body)
        if isinstance(answer, Admitted) and answer.ticket is not None and has_client_params(answer.ticket.parsed.body):
            self.picker.director.settle(answer.ticket, 400)  # the body cannot be cleaned here: refuse it
            answer = Reject(400, "invalid_request", "kv_transfer_params is not accepted from clients.",
                            param="kv_transfer_params")
        result = self.picker.pick(headers, body, None, answer)
        if isinstance(result, Reject):
            return _refusal(result)
        out = {DESTINATION_HEADER: host_port(result.target), ENDPOINT_HEADER: result.target}
        if result.prefill is not None:
            out[PREFILL_HEADER] = host_port(result.prefill)
        self.hand_off(result)
        return web.Response(headers=out)

    def hand_off(self, pick: Pick) -> None:
        """Keep the request charged for ``hold_s``, then settle it (no status, no usage: the EPP never sees them)."""
        if pick.done:
            return
        asyncio.get_running_loop().call_later(
            self.hold_s, lambda: self.picker.complete(pick, ok=True, outcome="handed_off"))
