"""Lifecycle hooks: a plugin's declared hook Protocols are called; a declared hook it lacks is a ConfigError."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import pytest

from llmd_kserve.builtin import BUILTIN_DECIDERS, DEFAULT_PICKER, DEFAULT_PROFILE_HANDLER, REGISTRY
from llmd_kserve.errors import ConfigError
from llmd_kserve.plugins.base import (
    HOOKS,
    CycleState,
    EndpointRemoved,
    HandlerDecision,
    OnComplete,
    OnScheduled,
    PluginContext,
)
from llmd_kserve.scheduling.scheduler import ProfileSpec, Scheduler
from llmd_kserve.types import EndpointState, LLMRequest, RequestOutcome
from tests.scheduling.sched_fixtures import endpoint, make_ctx, prompt, request


class RecordingPicker(OnScheduled, OnComplete, EndpointRemoved):
    """Picks the first endpoint and records the hook calls it gets; ``on_prefill_complete`` is not declared."""

    type: ClassVar[str] = "recording-picker"
    kind: ClassVar[str] = "picker"

    def __init__(self, name: str) -> None:
        self.name = name
        self.calls: list[tuple[str, Any]] = []

    def pick(self, state: CycleState, scored: Sequence[tuple[EndpointState, float]]) -> EndpointState:
        return scored[0][0]

    def on_scheduled(self, state: CycleState, decision: HandlerDecision) -> None:
        self.calls.append(("scheduled", decision.target))

    def on_complete(self, request: LLMRequest, decision: HandlerDecision, outcome: RequestOutcome) -> None:
        self.calls.append(("complete", request.request_id))

    def on_prefill_complete(self, request: LLMRequest, decision: HandlerDecision, outcome: RequestOutcome) -> None:
        self.calls.append(("prefill-complete", request.request_id))  # not declared: never called

    def remove_endpoint(self, endpoint_id: Any) -> None:
        self.calls.append(("removed", endpoint_id))


class LackingPicker(OnComplete):
    """Declares OnComplete and implements nothing but ``pick``."""

    type: ClassVar[str] = "lacking-picker"
    kind: ClassVar[str] = "picker"

    def __init__(self, name: str) -> None:
        self.name = name

    def pick(self, state: CycleState, scored: Sequence[tuple[EndpointState, float]]) -> EndpointState:
        return scored[0][0]


def scheduler_with(plugin: Any, ctx: PluginContext) -> Scheduler:
    def builtin(type_: str) -> Any:
        return REGISTRY[type_].factory(type_, REGISTRY[type_].params(), ctx)

    return Scheduler({plugin.name: plugin}, [ProfileSpec("default", ((plugin.name, None),))], ctx, builtin,
                     DEFAULT_PROFILE_HANDLER, DEFAULT_PICKER)


def test_declared_hooks_are_called_and_undeclared_methods_are_not():
    rec = RecordingPicker("rec")
    sched = scheduler_with(rec, make_ctx())
    eps = [endpoint(i) for i in range(3)]
    req = request("r1", prompt(1, 40))
    res = sched.schedule(req, eps)
    assert rec.calls == [("scheduled", eps[0].id)] and sched.in_flight() == 1
    sched.on_prefill_complete(req, res, RequestOutcome(ok=True))  # no prefill leg, and the hook is not declared
    sched.on_complete(req, res, RequestOutcome(ok=True))
    sched.remove_endpoint(eps[1].id)
    assert rec.calls == [("scheduled", eps[0].id), ("complete", "r1"), ("removed", eps[1].id)]
    assert sched.in_flight() == 0


def test_a_declared_hook_that_is_not_implemented_is_a_config_error():
    with pytest.raises(ConfigError, match=r"plugins: plugin 'lacking' \(LackingPicker\) declares hook OnComplete "
                                          r"but does not implement on_complete\(\)"):
        scheduler_with(LackingPicker("lacking"), make_ctx())  # mypy says so too: "cannot instantiate abstract class"


@pytest.mark.parametrize("cls", [*(i.factory for i in REGISTRY.values()), *BUILTIN_DECIDERS.values()],
                         ids=lambda c: c.__name__)
def test_every_builtin_declares_the_hooks_it_implements(cls):
    for hook, method in HOOKS.items():
        if callable(getattr(cls, method, None)):
            assert hook in cls.__mro__, f"{cls.__name__}.{method} without {hook.__name__}"
