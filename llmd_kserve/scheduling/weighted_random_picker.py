"""Picker ``weighted-random-picker``: an endpoint drawn with probability proportional to its total score."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import accumulate
from typing import ClassVar

from llmd_kserve.plugins.base import CycleState, PickerParams, PluginContext
from llmd_kserve.types import EndpointState


class WeightedRandomPicker:
    """Draws with ``ctx.rng``, probability ∝ total score (negative totals count as 0); uniform when all are 0.
    (llm-d draws A-Res keys ``U ** (1 / score)`` and takes the largest: for one endpoint, the same distribution.)"""

    type: ClassVar[str] = "weighted-random-picker"
    kind: ClassVar[str] = "picker"

    class Params(PickerParams):
        pass

    def __init__(self, name: str, params: Params, ctx: PluginContext) -> None:
        self.name = name
        self._rng = ctx.rng

    def pick(self, state: CycleState, scored: Sequence[tuple[EndpointState, float]]) -> EndpointState:
        cum = list(accumulate(max(0.0, s) for _, s in scored))
        total = cum[-1]
        if total <= 0:
            return self._rng.choice(scored)[0]
        x = self._rng.random() * total
        for (e, _), c in zip(scored, cum, strict=True):
            if x < c:
                return e
        return scored[-1][0]
