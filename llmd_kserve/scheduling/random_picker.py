"""Picker ``random-picker``: a uniformly random candidate, scores ignored (the ``random`` baseline)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from llmd_kserve.plugins.base import CycleState, PickerParams, PluginContext
from llmd_kserve.types import EndpointState


class RandomPicker:
    """Uniform choice with ``ctx.rng``."""

    type: ClassVar[str] = "random-picker"
    kind: ClassVar[str] = "picker"

    class Params(PickerParams):
        pass

    def __init__(self, name: str, params: Params, ctx: PluginContext) -> None:
        self.name = name
        self._rng = ctx.rng

    def pick(self, state: CycleState, scored: Sequence[tuple[EndpointState, float]]) -> EndpointState:
        return self._rng.choice(scored)[0]
