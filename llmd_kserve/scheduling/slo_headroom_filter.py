"""``slo-headroom-tier-filter``: keep the endpoints predicted to meet the request's SLO, when there are any."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from pydantic import Field

from llmd_kserve.plugins.base import CycleState, PluginContext
from llmd_kserve.scheduling.slo_admitter import has_targets, headroom, predictions
from llmd_kserve.scheduling.ttft import TTFTEstimator, TTFTParams
from llmd_kserve.types import EndpointState


class SLOHeadroomTierFilter:
    """llm-d's ``slo-headroom-tier-filter``: splits the candidates of a request with a TTFT or TPOT target into
    those predicted to meet both (headroom >= 0: target minus predicted TTFT, and minus predicted decode step) and
    the rest, and keeps the first tier when it is not empty; with probability ``epsilonExploreNeg`` it keeps the
    second instead, so that an endpoint recovering from overload is seen again. Without targets, or when every
    candidate is in one tier, it keeps them all (a request of any priority; the scorers then rank them)."""

    type: ClassVar[str] = "slo-headroom-tier-filter"
    kind: ClassVar[str] = "filter"

    class Params(TTFTParams):
        epsilon_explore_neg: float = Field(0.01, ge=0, le=1)
        """Probability of keeping the tier that misses the SLO when both tiers have endpoints."""

    def __init__(self, name: str, params: Params, ctx: PluginContext) -> None:
        self.name = name
        self.params = params
        self._ttft = TTFTEstimator(params, ctx)
        self._profile = ctx.profile
        self._rng = ctx.rng
        self.requires = self._ttft.requires

    def filter(self, state: CycleState, endpoints: Sequence[EndpointState]) -> Sequence[EndpointState]:
        objective = state.request.objective
        if objective is None or not has_targets(objective) or len(endpoints) < 2:
            return endpoints
        predicted = predictions(state, endpoints, self._ttft, self._profile)
        meet = [e for e in endpoints if headroom(objective, predicted[e.endpoint.id]) >= 0]
        if not meet or len(meet) == len(endpoints):
            return endpoints
        eps = self.params.epsilon_explore_neg
        if eps > 0 and self._rng.random() < eps:
            return [e for e in endpoints if headroom(objective, predicted[e.endpoint.id]) < 0]
        return meet
