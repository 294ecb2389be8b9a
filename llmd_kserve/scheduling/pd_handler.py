"""Profile handler ``pd-profile-handler``: choose the decode endpoint, then let a decider ask for a remote prefill."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from pydantic import Field, model_validator

from llmd_kserve.disagg.deciders import DECIDERS, Decider, build_decider
from llmd_kserve.errors import NoEndpointError
from llmd_kserve.plugins.base import (
    CycleState,
    EndpointRemoved,
    HandlerDecision,
    OnScheduled,
    PluginContext,
    PluginParams,
    ProfileResult,
    declared_hooks,
)
from llmd_kserve.types import EndpointId, EndpointState, PDVerdict

PREFILL_PROFILE = "prefill"
VERDICT_KEY = "pd-verdict"
"""``state.data[VERDICT_KEY]``: a precheck's :class:`~llmd_kserve.types.PDVerdict`, kept until ``process_results``
puts the cycle's verdict into the HandlerDecision (``pd``)."""


class PDProfileHandler(OnScheduled, EndpointRemoved):
    """llm-d's ``pd-profile-handler``. Profiles: one named ``prefill`` (e.g. ``prefill-filter`` + prefix + load
    scorers) and one other, the decode profile (e.g. ``decode-filter`` + ...); a single profile means decode only
    (P/D off). Round 1 runs the decode profile; unless the decider's precheck settles on a local prefill, round 2
    runs the prefill profile; the decider then sees both picks. The result names the decode endpoint as ``target``
    and the prefill endpoint, when remote, as ``prefill`` (never the same endpoint). ``decider``: one of
    ``always``, ``never``, ``uncached-tokens``, ``predicted-ttft``; ``deciderParameters``: its Params."""

    type: ClassVar[str] = "pd-profile-handler"
    kind: ClassVar[str] = "profile-handler"

    class Params(PluginParams):
        decider: str = "predicted-ttft"
        decider_parameters: dict[str, Any] = Field(default_factory=dict)

        @model_validator(mode="after")
        def _check_decider(self) -> PDProfileHandler.Params:
            cls = DECIDERS.get(self.decider)
            if cls is None:
                raise ValueError(f"unknown decider {self.decider!r}; known: {', '.join(DECIDERS)}")
            cls.Params.model_validate(self.decider_parameters)  # a ValidationError names the bad field
            return self

    def __init__(self, name: str, params: Params, ctx: PluginContext) -> None:
        self.name = name
        self.decider: Decider = build_decider(params.decider, params.decider_parameters, ctx)
        self._decider_hooks = declared_hooks(self.decider)
        """The hooks the decider declares; the handler forwards them."""

    def on_scheduled(self, state: CycleState, decision: HandlerDecision) -> None:
        hook = self._decider_hooks.get(OnScheduled)
        if hook is not None:
            hook(state, decision)

    def remove_endpoint(self, endpoint_id: EndpointId) -> None:
        hook = self._decider_hooks.get(EndpointRemoved)
        if hook is not None:
            hook(endpoint_id)

    @classmethod
    def validate_profiles(cls, names: Sequence[str]) -> str | None:
        if len(names) == 1:
            return None if names[0] != PREFILL_PROFILE else "pd-profile-handler needs a decode profile"
        if len(names) != 2 or PREFILL_PROFILE not in names:
            return (f"pd-profile-handler needs a decode profile and one named {PREFILL_PROFILE!r} "
                    f"(or a single decode profile), got {list(names)}")
        return None

    @staticmethod
    def _decode_profile(profiles: Sequence[str]) -> str:
        return next(p for p in profiles if p != PREFILL_PROFILE)

    @staticmethod
    def _endpoint(state: CycleState, eid: EndpointId) -> EndpointState:
        return next(e for e in state.candidates if e.endpoint.id == eid)

    def pick_profiles(
        self, state: CycleState, profiles: Sequence[str], results: Mapping[str, ProfileResult]
    ) -> Sequence[str]:
        decode = self._decode_profile(profiles)
        if decode not in results:
            return (decode,)
        target = results[decode].target
        if PREFILL_PROFILE in results or PREFILL_PROFILE not in profiles or target is None:
            return ()
        verdict = self.decider.precheck(state, self._endpoint(state, target))
        if verdict is not None:
            state.data[VERDICT_KEY] = verdict
            return ()
        return (PREFILL_PROFILE,)

    def process_results(self, state: CycleState, results: Mapping[str, ProfileResult]) -> HandlerDecision:
        decode_name = next(n for n in results if n != PREFILL_PROFILE)
        result = results[decode_name]
        if result.target is None:
            raise NoEndpointError(
                f"no decode endpoint left for request {state.request.request_id!r} after filter "
                f"{result.empty_filter!r} ({len(state.candidates)} candidates)"
            )
        prefill = results.get(PREFILL_PROFILE)
        if prefill is None or prefill.target is None or prefill.target == result.target:
            verdict: PDVerdict | None = state.data.get(VERDICT_KEY)
            if verdict is None:
                why = "no prefill profile" if prefill is None else (
                    "no prefill endpoint" if prefill.target is None else "prefill endpoint is the decode endpoint")
                verdict = PDVerdict(False, why)
            return HandlerDecision(primary=decode_name, target=result.target, pd=verdict)
        verdict = self.decider.decide(state, self._endpoint(state, result.target),
                                      self._endpoint(state, prefill.target))
        return HandlerDecision(primary=decode_name, target=result.target,
                               prefill=prefill.target if verdict.remote else None, pd=verdict)
