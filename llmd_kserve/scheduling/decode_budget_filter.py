"""Filter ``decode-budget-filter``: drop endpoints whose decode batch would step slower than a TPOT budget."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from pydantic import Field

from llmd_kserve.plugins.base import CycleState, PluginContext, PluginParams
from llmd_kserve.scheduling.ttft import endpoint_profile
from llmd_kserve.types import NO_LOAD, EndpointState


class DecodeBudgetFilter:
    """A TTFT model cannot see decode saturation: an endpoint holding a hot prefix predicts the best TTFT while its
    batch grows until every running request's time per output token breaks the SLO (prefill is a small part of a
    cached request's work; the decode batch is the rest). This filter predicts each candidate's decode step if the
    request joined it, ``profile.step_time(0, 0, n + 1, (n + 1) * prompt_tokens)`` on the endpoint's own latency
    profile (``ttft.endpoint_profile``), with ``n`` the larger of the router's in-flight requests there and the
    scraped ``running + waiting`` plus requests sent since the scrape, and keeps those within ``maxStepS``. When
    none is (the whole pool is saturated), it keeps every candidate: the other plugins decide.

    With ``margin`` set, an endpoint over the budget is dropped only when some candidate's step is more than
    ``margin`` (a fraction) lighter, and a pool all over the budget keeps the candidates within ``margin`` of the
    lightest. Without it, endpoints whose batches grow together cross the budget together; the one still under it
    then draws every request, each a prefix miss (a burst of cold prefills there), and the prefixes swing back and
    forth once it crosses too; and a saturated pool lets the heaviest batches keep growing."""

    type: ClassVar[str] = "decode-budget-filter"
    kind: ClassVar[str] = "filter"

    class Params(PluginParams):
        max_step_s: float = Field(0.04, gt=0)
        """Decode step budget in seconds (below the TPOT objective, leaving room for prefill chunks)."""
        margin: float | None = Field(None, ge=0)
        """Keep an endpoint over the budget while its step is at most (1 + margin) times the lightest candidate's
        (none: drop it outright, and keep every candidate when all are over the budget)."""

    requires: tuple[str, ...] = ("tokenize-producer", "inflight-load-producer")

    def __init__(self, name: str, params: Params, ctx: PluginContext) -> None:
        self.name = name
        self.params = params
        self._profile = ctx.profile

    def step(self, state: CycleState, e: EndpointState) -> float:
        """Predicted seconds of one decode step on ``e`` with this request in its batch."""
        eid = e.endpoint.id
        m = e.metrics
        scraped = m.running + m.waiting + (state.unscraped or {}).get(eid, NO_LOAD).requests
        n = max(scraped, (state.inflight or {}).get(eid, NO_LOAD).requests) + 1
        return endpoint_profile(e.endpoint, self._profile).step_time(0, 0, n, n * max(state.prompt_tokens, 1))

    def filter(self, state: CycleState, endpoints: Sequence[EndpointState]) -> Sequence[EndpointState]:
        if len(endpoints) < 2:
            return endpoints
        # what ``step`` computes per endpoint, with the lookups hoisted and the step time computed once per
        # (profile, batch size): endpoints in the same state share it
        unscraped, inflight = state.unscraped or {}, state.inflight or {}
        tokens, default, budget = max(state.prompt_tokens, 1), self._profile, self.params.max_step_s
        memo: dict[tuple[int, int], float] = {}
        kept = []
        steps: list[float] = []
        for e in endpoints:
            eid, m = e.endpoint.id, e.metrics
            n = max(m.running + m.waiting + unscraped.get(eid, NO_LOAD).requests,
                    inflight.get(eid, NO_LOAD).requests) + 1
            profile = endpoint_profile(e.endpoint, default)
            key = (id(profile), n)  # the profiles outlive this call
            step = memo.get(key)
            if step is None:
                step = memo[key] = profile.step_time(0, 0, n, n * tokens)
            steps.append(step)
            if step <= budget:
                kept.append(e)
        margin = self.params.margin
        if margin is None:
            return kept or endpoints
        limit = max(budget, min(steps) * (1.0 + margin))
        return [e for e, step in zip(endpoints, steps, strict=True) if step <= limit]
