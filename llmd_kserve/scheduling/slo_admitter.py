"""``latency-slo-admitter``: shed (or hold back) a sheddable request that no endpoint can serve within its SLO.

The prediction it shares with ``slo-headroom-tier-filter``: per candidate, the predicted time to first token
(``ttft.estimate_ttft``) and the predicted decode step with the request in the batch (as ``decode-budget-filter``
computes it), memoised in the cycle state.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import Field

from llmd_kserve.errors import NoEndpointError
from llmd_kserve.plugins.base import CycleState, PluginContext
from llmd_kserve.scheduling.ttft import TTFTEstimator, TTFTParams, endpoint_profile
from llmd_kserve.types import NO_LOAD, EndpointId, EndpointState, Objective

if TYPE_CHECKING:
    from llmd_kserve.latency import LatencyProfile

Prediction = tuple[float, float]
"""(predicted seconds to the first token, predicted seconds per decode step) on one endpoint."""


class SloUnmet(NoEndpointError):
    """No endpoint can serve a sheddable request within its SLO. ``retry_after_s``: when the best endpoint's excess
    should have drained; ``max_wait_s``: how long the request may wait for one (0: refuse it now)."""

    def __init__(self, message: str, retry_after_s: float, max_wait_s: float, poll_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
        self.max_wait_s = max_wait_s
        self.poll_s = poll_s


def decode_step(state: CycleState, e: EndpointState, profile: LatencyProfile) -> float:
    """Predicted seconds of one decode step on ``e`` with this request in its batch (``decode-budget-filter``)."""
    m = e.metrics
    eid = e.endpoint.id
    n = max(m.running + m.waiting + (state.unscraped or {}).get(eid, NO_LOAD).requests,
            (state.inflight or {}).get(eid, NO_LOAD).requests) + 1
    return endpoint_profile(e.endpoint, profile).step_time(0, 0, n, n * max(state.prompt_tokens, 1))


def predictions(state: CycleState, endpoints: Sequence[EndpointState], ttft: TTFTEstimator,
                profile: LatencyProfile) -> Mapping[EndpointId, Prediction]:
    """(TTFT, decode step) of every endpoint in ``endpoints``, memoised in ``state``."""
    memo: dict[EndpointId, Prediction] = state.data.setdefault("slo_predictions", {})
    for e in endpoints:
        eid = e.endpoint.id
        if eid not in memo:
            memo[eid] = (ttft(state, e), decode_step(state, e, profile))
    return memo


def headroom(objective: Objective, prediction: Prediction, share: float = 1.0) -> float:
    """The smaller margin to ``share`` of the objective's targets, in seconds (negative: misses; no target:
    infinite)."""
    t, step = prediction
    margins = [objective.ttft_s * share - t] if objective.ttft_s is not None else []
    if objective.tpot_s is not None:
        margins.append(objective.tpot_s * share - step)
    return min(margins) if margins else math.inf


def has_targets(objective: Objective | None) -> bool:
    return objective is not None and (objective.ttft_s is not None or objective.tpot_s is not None)


class LatencySLOAdmitter:
    """llm-d's ``latency-slo-admitter``: a sheddable request (priority < 0) with a TTFT or TPOT target
    (``x-llm-d-slo-ttft-ms``, ``x-llm-d-slo-tpot-ms``) passes when at least one candidate is predicted to meet
    both targets, or is idle (nothing running, waiting or in flight there); otherwise it is refused (429 with
    ``Retry-After``, ``onMiss: reject``) or held back and re-checked every ``pollS`` for up to ``maxWaitS``
    (``onMiss: queue``; the wait counts against its TTFT target). Requests of priority >= 0 and requests without
    targets always pass; it never removes a candidate (put it first in a profile)."""

    type: ClassVar[str] = "latency-slo-admitter"
    kind: ClassVar[str] = "filter"

    class Params(TTFTParams):
        on_miss: Literal["reject", "queue"] = "reject"
        """What happens to a sheddable request no endpoint can serve in time."""
        max_wait_s: float = Field(2.0, ge=0)
        """``queue``: how long it may wait for an endpoint to get within its SLO before it is refused."""
        poll_s: float = Field(0.05, gt=0)
        """``queue``: seconds between two checks of a waiting request."""
        reserve: float = Field(0.0, ge=0, lt=1)
        """Share of the targets a sheddable request must leave unused: it passes when an endpoint is predicted
        within ``(1 - reserve) x`` its targets, so that the queue it joins leaves room for requests that cannot be
        shed (0: llm-d's rule, within the targets)."""

    def __init__(self, name: str, params: Params, ctx: PluginContext) -> None:
        self.name = name
        self.params = params
        self._ttft = TTFTEstimator(params, ctx)
        self._profile = ctx.profile
        self.requires = self._ttft.requires

    def filter(self, state: CycleState, endpoints: Sequence[EndpointState]) -> Sequence[EndpointState]:
        objective = state.request.objective
        if objective is None or not objective.sheddable or not has_targets(objective) or not endpoints:
            return endpoints
        inflight = state.inflight or {}
        for e in endpoints:
            m = e.metrics
            if m.running + m.waiting == 0 and inflight.get(e.endpoint.id, NO_LOAD).requests == 0:
                return endpoints  # an idle endpoint serves it as fast as it can be served
        predicted = predictions(state, endpoints, self._ttft, self._profile)
        share = 1.0 - self.params.reserve
        best = max(headroom(objective, predicted[e.endpoint.id], share) for e in endpoints)
        if best >= 0:
            return endpoints
        p = self.params
        raise SloUnmet(f"no endpoint can serve this sheddable request within its SLO (short by {-best * 1e3:.0f} ms)",
                       -best, p.max_wait_s if p.on_miss == "queue" else 0.0, p.poll_s)
