"""Filter ``prefix-affinity-filter``: stick to the endpoints that hold the prompt's prefix until they saturate."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from pydantic import Field

from llmd_kserve.plugins.base import CycleState, PluginContext
from llmd_kserve.scheduling.ttft import TTFTEstimator, TTFTParams
from llmd_kserve.types import EndpointState


class PrefixAffinityFilter:
    """"Sticky until saturated". Endpoints holding at least ``threshold`` of the prompt's blocks are *sticky*;
    when some candidates are sticky and some are not, keep only the sticky ones whose estimated TTFT is not worse
    than the best non-sticky endpoint's by more than ``max(ttftMargin * best, minMarginS)``. When no sticky
    endpoint passes that test (all saturated), or none / all are sticky, every candidate is kept.

    TTFT comes from :func:`llmd_kserve.scheduling.ttft.estimate_ttft` (latency profile, cached prefix, backlog).
    """

    type: ClassVar[str] = "prefix-affinity-filter"
    kind: ClassVar[str] = "filter"

    class Params(TTFTParams):
        """``mode`` also says which prefix match decides stickiness."""

        threshold: float = Field(0.5, ge=0.0, le=1.0)
        """Fraction of the prompt's full blocks an endpoint must hold to be sticky."""
        ttft_margin: float = Field(0.5, ge=0.0)
        """Release when a sticky endpoint's TTFT exceeds the best other's by this fraction of it..."""
        min_margin_s: float = Field(0.05, ge=0.0)
        """...or by this many seconds, whichever is larger."""

    def __init__(self, name: str, params: Params, ctx: PluginContext) -> None:
        self.name = name
        self.params = params
        self._ttft = TTFTEstimator(params, ctx)
        self.requires = self._ttft.requires

    def filter(self, state: CycleState, endpoints: Sequence[EndpointState]) -> Sequence[EndpointState]:
        p = self.params
        n_blocks = len(state.block_keys)
        if n_blocks == 0 or len(endpoints) < 2:
            return endpoints
        hits = state.prefix_hits.get(p.mode) or {}
        threshold = p.threshold  # of the prompt's blocks in each endpoint's own block size
        sticky = [e for e in endpoints
                  if (h := hits.get(e.endpoint.id, 0)) > 0 and h >= threshold * len(state.keys_for(e.endpoint.id))]
        if not sticky or len(sticky) == len(endpoints):
            return endpoints
        sticky_ids = {e.endpoint.id for e in sticky}
        best_other = min(self._ttft(state, e) for e in endpoints if e.endpoint.id not in sticky_ids)
        limit = best_other + max(p.ttft_margin * best_other, p.min_margin_s)
        kept = [e for e in sticky if self._ttft(state, e) <= limit]
        return kept or endpoints
