"""Picker ``round-robin-picker``: candidates in turn, scores ignored (the ``round-robin`` baseline)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from llmd_kserve.plugins.base import CycleState, PluginContext, PluginParams
from llmd_kserve.types import EndpointState


class RoundRobinPicker:
    """Cycles through the candidates sorted by id; a counter advances once per pick, so a changing candidate set
    (exclusions, filters) still spreads requests evenly."""

    type: ClassVar[str] = "round-robin-picker"
    kind: ClassVar[str] = "picker"

    class Params(PluginParams):
        pass

    def __init__(self, name: str, params: Params, ctx: PluginContext) -> None:
        self.name = name
        self._next = 0

    def pick(self, state: CycleState, scored: Sequence[tuple[EndpointState, float]]) -> EndpointState:
        ordered = sorted((e for e, _ in scored), key=lambda e: e.endpoint.id)
        choice = ordered[self._next % len(ordered)]
        self._next += 1
        return choice
