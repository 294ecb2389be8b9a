"""P/D deciders: with the decode endpoint chosen (and the best prefill endpoint), prefill remotely or locally?

Each decider is selected by name in ``pd-profile-handler``'s parameters (``decider``, ``deciderParameters``) and
owns a frozen ``Params`` model, like a plugin. It answers in two stages, so that the prefill profile only runs when
it can matter:

* ``precheck(state, decode)`` -> a final *local* :class:`PDVerdict`, or ``None`` to look for a prefill endpoint;
* ``decide(state, decode, prefill)`` -> the verdict given the prefill profile's pick.

Built-ins (:data:`DECIDERS`): ``always``, ``never``, ``uncached-tokens`` (llm-d's prefix-based decider: remote when
the decode endpoint lacks more than ``threshold`` prompt tokens) and ``predicted-ttft`` (remote when the latency
model predicts an earlier first token: see :class:`PredictedTTFTDecider`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Protocol

from pydantic import Field

from llmd_kserve.plugins.base import CycleState, PluginContext, PluginParams
from llmd_kserve.scheduling.ttft import estimate_ttft
from llmd_kserve.types import EndpointState

PrefixMode = Literal["precise", "approx"]


@dataclass(frozen=True, slots=True)
class PDVerdict:
    """One decision, with the numbers behind it (``/debug`` and tests read them)."""

    remote: bool
    reason: str
    uncached_tokens: int = 0
    """Prompt tokens the decode endpoint lacks (what a local prefill computes, what a transfer moves)."""
    local_ttft_s: float | None = None
    remote_ttft_s: float | None = None


class Decider(Protocol):
    """A P/D decider (see the module docstring)."""

    name: ClassVar[str]

    def precheck(self, state: CycleState, decode: EndpointState) -> PDVerdict | None: ...

    def decide(self, state: CycleState, decode: EndpointState, prefill: EndpointState) -> PDVerdict: ...


def uncached_tokens(state: CycleState, endpoint: EndpointState, block_size: int, mode: PrefixMode | None) -> int:
    """Prompt tokens ``endpoint`` would compute (vLLM's rule: whole cached blocks, the last token always computed)."""
    return state.prompt_tokens - state.cached_tokens(endpoint.endpoint.id, block_size, mode)


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


class PredictedTTFTDecider:
    """Remote prefill when the latency model (``ctx.profile``) predicts an earlier first token than a local one.

    With ``n`` prompt tokens, the decode endpoint D lacking ``u_d`` of them and running ``R`` sequences::

        local  = backlog(D) + prefill(u_d on top of D's cached prefix, each chunk step also carrying R decode rows)
        remote = max(ttft(P) + hop + kv_transfer(u_d) + front_end(D), backlog(D)) + first decode step on D

    ``ttft(P)`` is the prefill endpoint's predicted TTFT (its backlog, its own prefix cache, its prefill:
    :func:`~llmd_kserve.scheduling.ttft.estimate_ttft`); ``backlog`` counts queued prompt tokens (the router's
    in-flight uncached tokens or ``waiting`` x ``tokensPerWaitingRequest``); the KV of D's cached prefix is not
    moved. Remote wins when ``remote + marginS < local``. ``maxLocalStepS`` (optional) also sends a prefill away
    when one of its chunk steps on D would stall D's running decodes longer than that (an ITL guard).
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
        max_local_step_s: float | None = Field(None, gt=0)

    def __init__(self, params: Params, ctx: PluginContext) -> None:
        self.params = params
        self._profile = ctx.profile
        self._bs = ctx.block_size

    def precheck(self, state: CycleState, decode: EndpointState) -> PDVerdict | None:
        n = uncached_tokens(state, decode, self._bs, self.params.mode)
        if n <= self.params.min_uncached_tokens:
            return PDVerdict(False, f"uncached {n} <= {self.params.min_uncached_tokens}", n)
        return None

    def _backlog_s(self, state: CycleState, ep: EndpointState) -> float:
        tokens = ep.metrics.waiting * self.params.tokens_per_waiting_request
        if state.inflight is not None:
            tokens = max(tokens, state.inflight.get(ep.endpoint.id, (0, 0))[1])
        return self._profile.prefill_time(tokens, 0) if tokens > 0 else 0.0

    def _running(self, state: CycleState, ep: EndpointState) -> int:
        reqs = state.inflight.get(ep.endpoint.id, (0, 0))[0] if state.inflight is not None else 0
        return max(ep.metrics.running, reqs)

    def estimates(self, state: CycleState, decode: EndpointState, prefill: EndpointState) -> tuple[float, float, int]:
        """(local TTFT, remote TTFT, tokens the decode endpoint lacks), in seconds."""
        p, prof, bs = self.params, self._profile, self._bs
        n = state.prompt_tokens
        u_d = uncached_tokens(state, decode, bs, p.mode)
        rows = self._running(state, decode)
        ctx = rows * p.decode_ctx_tokens
        row_cost = prof.decode_seq_s * rows + prof.decode_ctx_s * ctx
        chunks = max(1, -(-max(u_d, 1) // prof.max_num_batched_tokens))
        backlog_d = self._backlog_s(state, decode)
        local = estimate_ttft(state, decode, prof, bs, p.mode, p.tokens_per_waiting_request) + chunks * row_cost
        kv_ready = (estimate_ttft(state, prefill, prof, bs, p.mode, p.tokens_per_waiting_request) + p.hop_overhead_s
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
                return PDVerdict(True, f"local step {step:.3f}s > {p.max_local_step_s}s", u_d, local, remote)
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
    return cls(params, ctx)
