"""P/D deciders: with the decode endpoint chosen (and the best prefill endpoint), prefill remotely or locally?

Each decider is selected by name in ``pd-profile-handler``'s parameters (``decider``, ``deciderParameters``) and
owns a frozen ``Params`` model, like a plugin. It answers in two stages, so that the prefill profile only runs when
it can matter:

* ``precheck(state, decode)`` -> a final *local* :class:`PDVerdict`, or ``None`` to look for a prefill endpoint;
* ``decide(state, decode, prefill)`` -> the verdict given the prefill profile's pick.

A decider may also declare the scheduler's lifecycle hooks ``OnScheduled`` and ``EndpointRemoved`` (as base
classes, like a plugin); the handler forwards them.

Built-ins (:data:`DECIDERS`): ``always``, ``never``, ``uncached-tokens`` (llm-d's prefix-based decider: remote when
the decode endpoint lacks more than ``threshold`` prompt tokens) and ``predicted-ttft`` (remote when the latency
model predicts an earlier first token: see :class:`PredictedTTFTDecider`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol

from pydantic import Field

from llmd_kserve.plugins.base import (
    CycleState,
    EndpointRemoved,
    HandlerDecision,
    OnScheduled,
    PluginContext,
    PluginParams,
)
from llmd_kserve.types import NO_LOAD, EndpointId, EndpointState, PDVerdict

if TYPE_CHECKING:
    from llmd_kserve.latency import LatencyProfile

PrefixMode = Literal["precise", "approx"]


class Decider(Protocol):
    """A P/D decider (see the module docstring)."""

    name: ClassVar[str]

    def precheck(self, state: CycleState, decode: EndpointState) -> PDVerdict | None: ...

    def decide(self, state: CycleState, decode: EndpointState, prefill: EndpointState) -> PDVerdict: ...


def uncached_tokens(state: CycleState, endpoint: EndpointState, block_size: int, mode: PrefixMode | None) -> int:
    """Prompt tokens ``endpoint`` would compute (vLLM's rule: whole cached blocks, the last token always computed)."""
    return state.prompt_tokens - state.cached_tokens(endpoint.endpoint.id, block_size, mode)


class PrefillQueue:
    """Predicted time at which each endpoint will have finished the prefills routed to it (a virtual queue that
    the injected clock drains); GPU time only (the front end's latency overlaps)."""

    def __init__(self, profile: LatencyProfile, clock: Callable[[], float]) -> None:
        self._profile = profile
        self._clock = clock
        self._busy_until: dict[EndpointId, float] = {}

    def gpu_time(self, new_tokens: int, cached_tokens: int) -> float:
        p = self._profile
        return p.prefill_time(max(new_tokens, 1), cached_tokens) - p.request_overhead(new_tokens + cached_tokens)

    def add(self, endpoint_id: EndpointId, new_tokens: int, cached_tokens: int = 0) -> None:
        now = self._clock()
        start = max(now, self._busy_until.get(endpoint_id, now))
        self._busy_until[endpoint_id] = start + self.gpu_time(new_tokens, cached_tokens)

    def backlog_s(self, endpoint_id: EndpointId) -> float:
        return max(0.0, self._busy_until.get(endpoint_id, 0.0) - self._clock())

    def remove(self, endpoint_id: EndpointId) -> None:
        self._busy_until.pop(endpoint_id, None)


class AlwaysDecider:
    """Prefill remotely whenever a prefill endpoint is available."""

    name: ClassVar[str] = "always"

    class Params(PluginParams):
        pass

    def __init__(self, params: Params, ctx: PluginContext) -> None:
        self._bs = ctx.block_size

    def precheck(self, state: CycleState, decode: EndpointState) -> PDVerdict | None:
        return None

    def decide(self, state: CycleState, decode: EndpointState, prefill: EndpointState) -> PDVerdict:
        return PDVerdict(True, "always", uncached_tokens(state, decode, self._bs, None))


class NeverDecider:
    """Always prefill on the decode endpoint (aggregated serving on the decode pool)."""

    name: ClassVar[str] = "never"

    class Params(PluginParams):
        pass

    def __init__(self, params: Params, ctx: PluginContext) -> None:
        self._bs = ctx.block_size

    def precheck(self, state: CycleState, decode: EndpointState) -> PDVerdict | None:
        return PDVerdict(False, "never", uncached_tokens(state, decode, self._bs, None))

    def decide(self, state: CycleState, decode: EndpointState, prefill: EndpointState) -> PDVerdict:
        return PDVerdict(False, "never", uncached_tokens(state, decode, self._bs, None))


class UncachedTokensDecider:
    """llm-d's prefix-based decider: remote prefill when the decode endpoint lacks more than ``threshold`` prompt
    tokens (prefix match per ``mode``; ``None``: the precise index when it ran, else the approximation)."""

    name: ClassVar[str] = "uncached-tokens"

    class Params(PluginParams):
        threshold: int = Field(512, ge=0)
        mode: PrefixMode | None = None

    def __init__(self, params: Params, ctx: PluginContext) -> None:
        self.params = params
        self._bs = ctx.block_size

    def precheck(self, state: CycleState, decode: EndpointState) -> PDVerdict | None:
        n = uncached_tokens(state, decode, self._bs, self.params.mode)
        if n <= self.params.threshold:
            return PDVerdict(False, f"uncached {n} <= {self.params.threshold}", n)
        return None

    def decide(self, state: CycleState, decode: EndpointState, prefill: EndpointState) -> PDVerdict:
        n = uncached_tokens(state, decode, self._bs, self.params.mode)
        return PDVerdict(True, f"uncached {n} > {self.params.threshold}", n)


class PredictedTTFTDecider(OnScheduled, EndpointRemoved):
    """Remote prefill when the latency model (``ctx.profile``) predicts an earlier first token than a local one.

    With ``n`` prompt tokens, the decode endpoint D lacking ``u_d`` of them and running ``R`` sequences::

        local  = backlog(D) + prefill(u_d on top of D's cached prefix, each chunk step also carrying R decode rows)
        remote = max(ttft(P) + hop + kv_transfer(u_d) + front_end(D), backlog(D)) + first decode step on D

    ``ttft(P)`` is the prefill endpoint's predicted TTFT (its backlog, then the prompt on top of its own cached
    prefix); ``backlog`` is the prefill work already routed there and not yet done, from a :class:`PrefillQueue`
    this decider keeps (each routed prefill adds its GPU time; the clock drains it), or the scraped ``waiting``
    count x ``tokensPerWaitingRequest`` if more (other routers' load). A prefill in progress is a running request
    to vLLM, so neither ``waiting`` nor the requests in flight tell the backlog well; the virtual queue does.
    Prefill times come from ``profile.prefill_time`` (chunked by the batch budget); the KV of D's cached prefix is
    not moved. Remote wins when ``remote + marginS < local``.

    ITL guard: when a chunk step of the local prefill would stall D's running decodes longer than
    ``maxLocalStepS`` (default 50 ms) the prefill goes remote anyway, unless the remote TTFT is predicted above
    ``remoteTtftBudgetS`` (default 0.5 s) while local is faster: the prefill pool is congested, so spill prefills
    to the decode pool rather than miss the TTFT objective.
    """

    name: ClassVar[str] = "predicted-ttft"

    class Params(PluginParams):
        mode: PrefixMode | None = None
        tokens_per_waiting_request: int = Field(512, ge=0)
        margin_s: float = 0.0
        """Remote must win by more than this (seconds); negative values favour remote."""
        hop_overhead_s: float = Field(0.002, ge=0)
        """The extra router round trip of the prefill hop."""
        kv_link_gbps: float | None = Field(None, gt=0)
        """Transfer bandwidth (GB/s); None: the profile's ``kv_link_gbps``."""
        decode_ctx_tokens: int = Field(1024, ge=0)
        """Mean context length assumed for each running decode sequence."""
        min_uncached_tokens: int = Field(0, ge=0)
        """At or below this many uncached tokens decide local without looking for a prefill endpoint."""
        max_local_step_s: float | None = Field(0.05, gt=0)
        """ITL guard: a local prefill whose chunk step would stall D's running decodes longer goes remote..."""
        remote_ttft_budget_s: float | None = Field(0.5, gt=0)
        """...unless the remote TTFT is predicted above this (prefill pool congested) and local is faster."""

    def __init__(self, params: Params, ctx: PluginContext) -> None:
        self.params = params
        self._profile = ctx.profile
        self._bs = ctx.block_size
        self.queue = PrefillQueue(ctx.profile, ctx.clock)

    def on_scheduled(self, state: CycleState, decision: HandlerDecision) -> None:
        """Queue the request's prefill on whichever endpoint computes it."""
        where = decision.prefill or decision.target
        cached = state.cached_tokens(where, self._bs, self.params.mode)
        self.queue.add(where, state.prompt_tokens - cached, cached)

    def remove_endpoint(self, endpoint_id: EndpointId) -> None:
        self.queue.remove(endpoint_id)

    def precheck(self, state: CycleState, decode: EndpointState) -> PDVerdict | None:
        n = uncached_tokens(state, decode, self._bs, self.params.mode)
        if n <= self.params.min_uncached_tokens:
            return PDVerdict(False, f"uncached {n} <= {self.params.min_uncached_tokens}", n)
        return None

    def _backlog_s(self, state: CycleState, ep: EndpointState) -> float:
        """Seconds of prefill work queued on ``ep``: this router's virtual queue, or the scraped ``waiting`` count
        (other routers' load) x ``tokensPerWaitingRequest``, whichever is more."""
        waiting = ep.metrics.waiting * self.params.tokens_per_waiting_request
        return max(self.queue.backlog_s(ep.endpoint.id), self.queue.gpu_time(waiting, 0) if waiting else 0.0)

    def _running(self, state: CycleState, ep: EndpointState) -> int:
        reqs = state.inflight.get(ep.endpoint.id, NO_LOAD).requests if state.inflight is not None else 0
        return max(ep.metrics.running, reqs)

    def estimates(self, state: CycleState, decode: EndpointState, prefill: EndpointState) -> tuple[float, float, int]:
        """(local TTFT, remote TTFT, tokens the decode endpoint lacks), in seconds."""
        p, prof, bs = self.params, self._profile, self._bs
        n = state.prompt_tokens
        c_d = state.cached_tokens(decode.endpoint.id, bs, p.mode)
        c_p = state.cached_tokens(prefill.endpoint.id, bs, p.mode)
        u_d = n - c_d
        rows = self._running(state, decode)
        ctx = rows * p.decode_ctx_tokens
        row_cost = prof.decode_seq_s * rows + prof.decode_ctx_s * ctx
        chunks = max(1, -(-max(u_d, 1) // prof.max_num_batched_tokens))
        backlog_d = self._backlog_s(state, decode)
        local = backlog_d + prof.prefill_time(max(u_d, 1), c_d) + chunks * row_cost
        kv_ready = (self._backlog_s(state, prefill) + prof.prefill_time(max(n - c_p, 1), c_p) + p.hop_overhead_s
                    + prof.kv_transfer_time(max(u_d, 0), p.kv_link_gbps) + prof.request_overhead(n))
        remote = max(kv_ready, backlog_d) + prof.step_time(1, n, rows, ctx)
        return local, remote, u_d

    def decide(self, state: CycleState, decode: EndpointState, prefill: EndpointState) -> PDVerdict:
        p, prof = self.params, self._profile
        local, remote, u_d = self.estimates(state, decode, prefill)
        if p.max_local_step_s is not None:
            rows = self._running(state, decode)
            step = prof.step_time(min(u_d, prof.max_num_batched_tokens), state.prompt_tokens, rows,
                                  rows * p.decode_ctx_tokens)
            if rows and step > p.max_local_step_s:
                budget = p.remote_ttft_budget_s
                if budget is None or remote <= budget or local >= remote:
                    return PDVerdict(True, f"local step {step:.3f}s > {p.max_local_step_s}s", u_d, local, remote)
                return PDVerdict(False, f"remote {remote:.3f}s > budget {budget}s, local {local:.3f}s", u_d,
                                 local, remote)
        if remote + p.margin_s < local:
            return PDVerdict(True, f"remote {remote:.3f}s < local {local:.3f}s", u_d, local, remote)
        return PDVerdict(False, f"local {local:.3f}s <= remote {remote:.3f}s", u_d, local, remote)


DECIDERS: Mapping[str, type[Any]] = {
    cls.name: cls for cls in (AlwaysDecider, NeverDecider, UncachedTokensDecider, PredictedTTFTDecider)
}
"""Every built-in decider by name, in one explicit list."""


def build_decider(name: str, params: PluginParams | Mapping[str, Any] | None, ctx: PluginContext) -> Decider:
    """The decider ``name`` with ``params`` (a mapping is validated against its ``Params``; KeyError if unknown)."""
    cls = DECIDERS[name]
    if not isinstance(params, PluginParams):
        params = cls.Params.model_validate(dict(params or {}))
    decider: Decider = cls(params, ctx)
    return decider
