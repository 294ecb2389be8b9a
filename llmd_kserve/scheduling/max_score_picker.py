"""Picker ``max-score-picker``: the highest total score, ties broken by the injected RNG."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from llmd_kserve.plugins.base import CycleState, PickerParams, PluginContext
from llmd_kserve.types import EndpointState

_TIE = 1e-9


class MaxScorePicker:
    """Picks the endpoint with the highest total; endpoints within 1e-9 of it are tied and one is chosen uniformly
    with ``ctx.rng`` (so equal endpoints share load instead of the first one taking everything)."""

    type: ClassVar[str] = "max-score-picker"
    kind: ClassVar[str] = "picker"

    class Params(PickerParams):
        pass

    def __init__(self, name: str, params: Params, ctx: PluginContext) -> None:
        self.name = name
        self._rng = ctx.rng

    def pick(self, state: CycleState, scored: Sequence[tuple[EndpointState, float]]) -> EndpointState:
        best = max(s for _, s in scored)
        tied = [e for e, s in scored if s >= best - _TIE]
        return tied[0] if len(tied) == 1 else self._rng.choice(tied)
