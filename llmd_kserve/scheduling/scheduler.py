"""The Scheduler: wires built plugins into profiles, runs producers once, profiles via the handler, feeds hooks."""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, NamedTuple

from llmd_kserve.errors import NoEndpointError
from llmd_kserve.plugins.base import (
    CycleState,
    EndpointRemoved,
    HandlerDecision,
    OnComplete,
    OnPrefillComplete,
    OnScheduled,
    PluginContext,
    ProfileResult,
    declared_hooks,
)
from llmd_kserve.scheduling.interface import SchedulerInterface, SchedulingResult
from llmd_kserve.scheduling.runner import ProfileRunner
from llmd_kserve.scheduling.ttft_headroom import TTFTHeadroom
from llmd_kserve.types import EndpointId, EndpointState, LLMRequest, RequestOutcome

__all__ = ["PluginContext", "ProfileSpec", "Scheduler", "SchedulingResult"]

logger = logging.getLogger(__name__)
_MAX_ROUNDS = 8


class ProfileSpec(NamedTuple):
    """One scheduling profile: its name and its filters, scorers (with weights) and picker, by instance name."""

    name: str
    plugins: tuple[tuple[str, float | None], ...]


class Scheduler(SchedulerInterface):
    """Picks an endpoint per request. Synchronous, no I/O; not thread-safe (one event loop calls it).

    Built by :func:`llmd_kserve.config.build.build_scheduler` from a validated config. ``builtin(type)`` makes a
    registered plugin with default parameters; with it the scheduler adds what the config leaves out: the profile
    handler ``default_handler``, the picker ``default_picker`` per profile, ``tokenize-producer`` and every producer
    a configured filter or scorer requires, ordered dependencies first.
    """

    def __init__(self, plugins: Mapping[str, Any], profiles: Sequence[ProfileSpec], ctx: PluginContext,
                 builtin: Callable[[str], Any], default_handler: str, default_picker: str,
                 config: Any = None) -> None:
        self.config = config
        """The (validated) config this scheduler was built from, for display."""
        self.ctx = ctx
        self._builtin = builtin
        self.plugins: dict[str, Any] = dict(plugins)
        self.built: dict[tuple[str, str], tuple[Any, Any]] = {}
        """(type, instance key) -> (params, plugin) of every plugin made for this scheduler; set by the builder, which
        reuses the unchanged ones on a config hot reload."""
        kinds = {name: p.kind for name, p in self.plugins.items()}
        handlers = [n for n, k in kinds.items() if k == "profile-handler"]
        self.handler = self.plugins[handlers[0]] if handlers else builtin(default_handler)
        self.runners: dict[str, ProfileRunner] = {}
        for profile in profiles:
            filters, scorers, picker = [], [], None
            for ref, weight in profile.plugins:
                plugin, kind = self.plugins[ref], kinds[ref]
                if kind == "filter":
                    filters.append(plugin)
                elif kind == "scorer":
                    scorers.append((plugin, 1.0 if weight is None else weight))
                else:
                    picker = plugin
            self.runners[profile.name] = ProfileRunner(profile.name, filters, scorers,
                                                       picker or builtin(default_picker))
        self.profile_names: tuple[str, ...] = tuple(self.runners)
        self.config_hash: str = config.digest() if config is not None else ""
        self.weights: Mapping[str, float] = {f"{name}/{scorer.name}": weight for name, runner in self.runners.items()
                                             for scorer, weight in runner.scorers}
        self.producers = self._order_producers([p for n, p in self.plugins.items() if kinds[n] == "producer"])
        every = [*self.plugins.values(), *self.producers, self.handler, *(r.picker for r in self.runners.values())]
        hooks = [declared_hooks(p) for p in {id(p): p for p in every}.values()]
        self._on_scheduled: list[Callable[[CycleState, HandlerDecision], None]] = [
            h[OnScheduled] for h in hooks if OnScheduled in h]
        self._on_complete: list[Callable[[LLMRequest, HandlerDecision, RequestOutcome], None]] = [
            h[OnComplete] for h in hooks if OnComplete in h]
        self._on_prefill: list[Callable[[LLMRequest, HandlerDecision, RequestOutcome], None]] = [
            h[OnPrefillComplete] for h in hooks if OnPrefillComplete in h]
        self._on_remove: list[Callable[[EndpointId], None]] = [h[EndpointRemoved] for h in hooks if EndpointRemoved in h]
        self._in_flight = 0
        self._headroom = (TTFTHeadroom(ctx.ttft_target_s, self.plugins.values(), ctx)
                          if ctx.ttft_target_s is not None else None)

    def reused_plugins(self, other: Scheduler) -> list[str]:
        """Names of the plugin instances this scheduler shares with ``other`` (carried over by a reload)."""
        theirs = {id(p) for _, p in other.built.values()}
        return sorted({p.name for _, p in self.built.values() if id(p) in theirs})

    def schedule(
        self, request: LLMRequest, endpoints: Sequence[EndpointState], exclude: Collection[EndpointId] = ()
    ) -> SchedulingResult:
        """Decide where ``request`` goes among ``endpoints`` minus ``exclude``; raises NoEndpointError when none
        is eligible. Plugins that declare ``OnScheduled`` see the decision before this returns."""
        if exclude:
            excluded = set(exclude)
            endpoints = [e for e in endpoints if e.endpoint.id not in excluded]
        if not endpoints:
            raise NoEndpointError(f"no endpoint available for request {request.request_id!r}")
        state = CycleState(request, endpoints)
        for producer in self.producers:
            producer.produce(state)
        results: dict[str, ProfileResult] = {}
        for _ in range(_MAX_ROUNDS):
            names = self.handler.pick_profiles(state, self.profile_names, results)
            if not names:
                break
            for name in names:
                results[name] = self.runners[name].run(state)
        decision: HandlerDecision = self.handler.process_results(state, results)
        for hook in self._on_scheduled:
            hook(state, decision)
        self._in_flight += 1
        headroom = self._headroom(state) if self._headroom is not None else None
        scores = {f"{r.profile}/{s}": v for r in results.values() for s, v in r.scores.items()}
        return SchedulingResult(
            request_id=request.request_id,
            target=decision.target,
            prefill=decision.prefill,
            prompt_tokens=state.prompt_tokens,
            predicted_cached_tokens=state.cached_tokens(decision.target, self.ctx.block_size),
            profile=decision.primary,
            scores=scores,
            totals=results[decision.primary].totals,
            config_hash=self.config_hash,
            weights=self.weights,
            pd=decision.pd,
            ttft_headroom_s=headroom,
        )

    def on_complete(self, request: LLMRequest, result: SchedulingResult, outcome: RequestOutcome) -> None:
        """A scheduled request finished (or failed): release its in-flight load etc. Call once per ``schedule``."""
        self._in_flight = max(0, self._in_flight - 1)
        decision = HandlerDecision(result.profile, result.target, result.prefill)
        for hook in self._on_complete:
            hook(request, decision, outcome)

    def on_prefill_complete(self, request: LLMRequest, result: SchedulingResult, outcome: RequestOutcome) -> None:
        """The remote prefill leg of a disaggregated request (``result.prefill``) ended, successfully or not (then
        the decode endpoint prefills locally): release the prefill endpoint's in-flight charge etc. At most once per
        ``schedule`` whose result has a prefill endpoint, before that request's ``on_complete`` (which still
        follows, and releases whatever the prefill leg left). A no-op when ``result.prefill`` is None."""
        if result.prefill is None:
            return
        decision = HandlerDecision(result.profile, result.target, result.prefill)
        for hook in self._on_prefill:
            hook(request, decision, outcome)

    def remove_endpoint(self, endpoint_id: EndpointId) -> None:
        """Forget everything plugins remember about an endpoint that left the pool."""
        for hook in self._on_remove:
            hook(endpoint_id)

    def in_flight(self) -> int:
        """Results scheduled and not completed yet."""
        return self._in_flight

    def _order_producers(self, configured: list[Any]) -> list[Any]:
        by_type: dict[str, Any] = {}
        for p in configured:
            by_type.setdefault(p.type, p)
        order: list[Any] = []
        placed: set[int] = set()

        def add(p: Any) -> None:
            if id(p) in placed:
                return
            placed.add(id(p))
            for dep in p.requires:
                add(need(dep))
            order.append(p)

        def need(type_: str) -> Any:
            if type_ not in by_type:
                made = self._builtin(type_)
                if made.kind != "producer":
                    raise TypeError(f"a plugin requires {type_!r}, which is not a producer")
                by_type[type_] = made
            return by_type[type_]

        add(need("tokenize-producer"))
        for p in configured:
            add(p)
        for p in self.plugins.values():
            if p.kind in ("filter", "scorer"):
                for dep in p.requires:
                    add(need(dep))
        return order
