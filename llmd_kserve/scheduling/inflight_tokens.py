"""llm-d v1.0's in-flight token accounting, kept by ``inflight-load-producer`` for llm-d's plugins.

Per endpoint, the tokens of requests the router sent and that still weigh on it: each request's uncached prompt
tokens until its prefill is over, plus (``addEstimatedOutputTokens``) an estimate of its output tokens until it
finishes. llm-d releases the prompt part on the first streamed chunk; here it goes at the first of: the
predicted end of the request's prefill (streaming requests only: the endpoint's fluid prefill queue, see
``inflight_load``), the end of the P/D prefill leg, the request's end. Non-streaming requests keep it to their end,
as in llm-d. ``token-load-scorer`` and ``prefix-cache-affinity-filter`` read it through :func:`inflight_tokens`.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from llmd_kserve.plugins.base import CycleState, HandlerDecision
from llmd_kserve.scheduling.approx_cache_producer import MATCH_INFO
from llmd_kserve.types import EndpointId

INFLIGHT_TOKENS = "inflight-tokens"
"""``state.data`` key: producer name (and type) -> :class:`InflightTokens`."""
_OUTPUT_CAPS = ("max_tokens", "max_completion_tokens", "max_output_tokens")


@dataclass(frozen=True, slots=True)
class InflightTokens:
    """llm-d's ``InFlightLoad.Tokens`` per endpoint (absent: 0) and ``UncachedRequestTokens`` of this request."""

    tokens: Mapping[EndpointId, int]
    request: Callable[[EndpointId], int]
    """This request's tokens were it sent to an endpoint: its uncached prompt tokens there (+ output estimate)."""


def inflight_tokens(state: CycleState, producer: str = "") -> InflightTokens | None:
    """The view of the ``inflight-load-producer`` named ``producer`` (``""``: the first one configured)."""
    return (state.data.get(INFLIGHT_TOKENS) or {}).get(producer or "inflight-load-producer")


def estimated_output(body: Mapping[str, Any], prompt_tokens: int, ratio: float, cap: int | None) -> int:
    """llm-d's output estimate: ``round(prompt * ratio)``, at most the client's own output limit and ``cap``."""
    if prompt_tokens <= 0:
        return 0
    est = round(prompt_tokens * ratio)
    for key in _OUTPUT_CAPS:
        limit = body.get(key)
        if isinstance(limit, int) and not isinstance(limit, bool) and 0 <= limit < est:
            est = limit
    return min(est, cap) if cap is not None else est


class TokenLedger:
    """The per-endpoint token totals and each request's charge (prompt part, output part, when charged)."""

    def __init__(self, name: str, type_: str, *, output_ratio: float | None, output_cap: int | None,
                 prefix_producer: str, block_size: int, clock: Callable[[], float], timeout_s: float) -> None:
        self._keys = (type_, name)
        self._ratio = output_ratio
        """None: no output estimate (``addEstimatedOutputTokens: false``)."""
        self._cap = output_cap
        self._prefix = prefix_producer
        self._block_size = block_size
        self._clock = clock
        self._timeout = timeout_s
        self.totals: dict[EndpointId, int] = {}
        self._charges: OrderedDict[tuple[str, EndpointId], list[float]] = OrderedDict()  # [prompt, output, at]
        self._due: list[tuple[float, str, EndpointId, float]] = []  # (prompt release time, request, endpoint, at)

    def publish(self, state: CycleState) -> None:
        """Release what is due, then put this cycle's view in ``state.data``."""
        self._release_due()
        view = InflightTokens(self.totals, lambda eid: self.request_tokens(state, eid))
        views = state.data.setdefault(INFLIGHT_TOKENS, {})
        views.setdefault(self._keys[0], view)
        views[self._keys[1]] = view

    def uncached(self, state: CycleState, endpoint_id: EndpointId) -> int:
        """Prompt tokens ``endpoint_id`` would compute: from the configured llm-d prefix producer's match when it
        ran, else the best known prefix match (precise index, else the router's estimate)."""
        infos = state.data.get(MATCH_INFO) or {}
        info = infos.get(self._prefix or "approx-prefix-cache-producer")
        if info is not None:
            return int(info.uncached_tokens(endpoint_id, state.prompt_tokens))
        return state.prompt_tokens - state.cached_tokens(endpoint_id, self._block_size)

    def output(self, state: CycleState) -> int:
        if self._ratio is None:
            return 0
        return estimated_output(state.request.body, state.prompt_tokens, self._ratio, self._cap)

    def request_tokens(self, state: CycleState, endpoint_id: EndpointId) -> int:
        return self.uncached(state, endpoint_id) + self.output(state)

    def charge(self, state: CycleState, decision: HandlerDecision, prefill_done_at: float | None) -> None:
        """Charge the request to its target (and P/D prefill endpoint); a streaming request's prompt part falls due
        at ``prefill_done_at`` (None: no prediction, kept until released)."""
        rid, out = state.request.request_id, self.output(state)
        streaming = state.request.body.get("stream") is True
        for eid in (decision.target, decision.prefill):
            if eid is None:
                continue
            self._drop(rid, eid)
            prompt, at = self.uncached(state, eid), self._clock()
            self._charges[(rid, eid)] = [prompt, out, at]
            self._add(eid, prompt + out)
            if streaming and prefill_done_at is not None and prompt:
                heapq.heappush(self._due, (prefill_done_at, rid, eid, at))

    def restore(self, request_id: str, endpoint_id: EndpointId, prompt: int, at: float) -> None:
        """Charge ``prompt`` tokens charged at ``at`` (clock time) of a request already in flight."""
        self._drop(request_id, endpoint_id)
        self._charges[(request_id, endpoint_id)] = [prompt, 0, at]
        self._add(endpoint_id, prompt)

    def clear(self) -> None:
        """Forget every charge."""
        self.totals.clear()
        self._charges.clear()
        self._due.clear()

    def release_prompt(self, request_id: str, endpoint_id: EndpointId) -> None:
        """The request's prefill on ``endpoint_id`` is over: its prompt part goes."""
        charge = self._charges.get((request_id, endpoint_id))
        if charge is not None and charge[0]:
            self._add(endpoint_id, -int(charge[0]))
            charge[0] = 0

    def finish(self, request_id: str, endpoint_id: EndpointId) -> None:
        """The request is over on ``endpoint_id``: whatever it still holds goes."""
        self._drop(request_id, endpoint_id)

    def remove_endpoint(self, endpoint_id: EndpointId) -> None:
        self.totals.pop(endpoint_id, None)
        for key in [k for k in self._charges if k[1] == endpoint_id]:
            del self._charges[key]

    def _drop(self, request_id: str, endpoint_id: EndpointId) -> None:
        charge = self._charges.pop((request_id, endpoint_id), None)
        if charge is not None:
            self._add(endpoint_id, -int(charge[0] + charge[1]))

    def _add(self, endpoint_id: EndpointId, tokens: int) -> None:
        total = self.totals.get(endpoint_id, 0) + tokens
        if total > 0:
            self.totals[endpoint_id] = total
        else:
            self.totals.pop(endpoint_id, None)

    def _release_due(self) -> None:
        now = self._clock()
        due = self._due
        while due and due[0][0] <= now:
            _, rid, eid, at = heapq.heappop(due)
            charge = self._charges.get((rid, eid))
            if charge is not None and charge[2] == at:  # not a later charge of the same request
                self.release_prompt(rid, eid)
        deadline = now - self._timeout
        while self._charges:
            (rid, eid), charge = next(iter(self._charges.items()))
            if charge[2] > deadline:
                break
            self._drop(rid, eid)
