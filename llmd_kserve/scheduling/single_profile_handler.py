"""Profile handler ``single-profile-handler``: run the one configured profile; its target serves the request."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar

from llmd_kserve.errors import NoEndpointError
from llmd_kserve.plugins.base import CycleState, HandlerDecision, PluginContext, PluginParams, ProfileResult


class SingleProfileHandler:
    """One round, one profile, no prefill endpoint. (A P/D handler would return ``["decode"]`` first, then
    ``["prefill"]`` if its decider says so, and name both targets in ``process_results``.)"""

    type: ClassVar[str] = "single-profile-handler"
    kind: ClassVar[str] = "profile-handler"

    class Params(PluginParams):
        pass

    def __init__(self, name: str, params: Params, ctx: PluginContext) -> None:
        self.name = name

    @classmethod
    def validate_profiles(cls, names: Sequence[str]) -> str | None:
        if len(names) != 1:
            return f"single-profile-handler needs exactly one scheduling profile, got {len(names)}"
        return None

    def pick_profiles(
        self, state: CycleState, profiles: Sequence[str], results: Mapping[str, ProfileResult]
    ) -> Sequence[str]:
        return () if results else (profiles[0],)

    def process_results(self, state: CycleState, results: Mapping[str, ProfileResult]) -> HandlerDecision:
        (result,) = results.values()
        if result.target is None:
            raise NoEndpointError(
                f"no endpoint left for request {state.request.request_id!r} after filter {result.empty_filter!r} "
                f"({len(state.candidates)} candidates)"
            )
        return HandlerDecision(primary=result.profile, target=result.target)
