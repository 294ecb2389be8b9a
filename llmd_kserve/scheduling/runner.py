"""The profile runner: filters in order, then total = Σ weight·clamp(score, 0, 1) over scorers, then the picker.

With one candidate left after the filters there is nothing to rank: scorers and picker are skipped (scorers are
pure, so no state changes; the decision is the one they would have made): the result has no scores, and the lone
candidate's total is 0.0 (not scored).
"""

from __future__ import annotations

from collections.abc import Sequence

from llmd_kserve.plugins.base import CycleState, Filter, Picker, ProfileResult, Scorer
from llmd_kserve.types import EndpointId, EndpointState


class ProfileRunner:
    """Runs one scheduling profile over ``state.candidates``. Raw scores are kept for ``/debug/decisions``; a score
    outside [0, 1] (or NaN) is clamped before weighting, and keys that aren't candidates are ignored."""

    __slots__ = ("name", "filters", "scorers", "picker")
    score_lone_candidate = False
    """True: score a lone candidate anyway (its scores then show in ``/debug/decisions``; the decision is the same)."""

    def __init__(
        self, name: str, filters: Sequence[Filter], scorers: Sequence[tuple[Scorer, float]], picker: Picker
    ) -> None:
        self.name = name
        self.filters = tuple(filters)
        self.scorers = tuple(scorers)
        self.picker = picker

    def run(self, state: CycleState) -> ProfileResult:
        endpoints: Sequence[EndpointState] = state.candidates
        for f in self.filters:
            endpoints = f.filter(state, endpoints)
            if not endpoints:
                return ProfileResult(self.name, None, empty_filter=f.name)
        if len(endpoints) == 1 and not self.score_lone_candidate:
            only = endpoints[0].endpoint.id
            return ProfileResult(self.name, only, {}, {only: 0.0}, (only,))
        totals: dict[EndpointId, float] = {e.endpoint.id: 0.0 for e in endpoints}
        scores: dict[str, dict[EndpointId, float]] = {}
        for scorer, weight in self.scorers:
            raw = scorer.score(state, endpoints)
            scores[scorer.name] = raw
            if weight:
                for eid, s in raw.items():
                    if eid in totals:
                        totals[eid] += weight * min(1.0, max(0.0, s))
        scored = [(e, totals[e.endpoint.id]) for e in endpoints]
        target = self.picker.pick(state, scored)
        return ProfileResult(self.name, target.endpoint.id, scores, totals, tuple(totals))
