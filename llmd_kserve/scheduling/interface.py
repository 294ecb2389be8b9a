"""The scheduler interface: what every transport (router, Endpoint Picker, cluster simulator) calls, and its result."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from llmd_kserve.types import EndpointId, EndpointState, LLMRequest, PDVerdict, RequestOutcome


@dataclass(frozen=True, slots=True)
class SchedulingResult:
    """One scheduling decision, with every scorer's raw score for ``/debug/decisions``."""

    request_id: str
    target: EndpointId
    prefill: EndpointId | None
    prompt_tokens: int
    predicted_cached_tokens: int
    """Prompt tokens the target should find cached (best known prefix match, vLLM's last-token rule applied)."""
    profile: str
    """The primary profile (whose target serves the request)."""
    scores: Mapping[str, Mapping[EndpointId, float]]
    """``"<profile>/<scorer name>"`` -> endpoint -> raw score."""
    totals: Mapping[EndpointId, float]
    """Weighted totals of the primary profile's candidates (after its filters)."""
    config_hash: str = ""
    """``SchedulerConfig.digest()`` of the config that made this decision."""
    weights: Mapping[str, float] | None = None
    """``"<profile>/<scorer name>"`` -> weight (the keys of ``scores``) in that config."""
    pd: PDVerdict | None = None
    """P/D configs: the decider's verdict (remote prefill or not, why, predicted local and remote TTFT)."""
    ttft_headroom_s: float | None = None
    """The deployment's TTFT target minus the best candidate's predicted TTFT (``PluginContext.ttft_target_s``
    set; at most one decision per 20 ms is measured), else None."""


class SchedulerInterface(Protocol):
    """A scheduler as its callers see it. Synchronous, no I/O. Every ``schedule`` is followed by exactly one
    ``on_complete`` for its result (and, when the result names a prefill endpoint, at most one
    ``on_prefill_complete`` before it)."""

    def schedule(self, request: LLMRequest, endpoints: Sequence[EndpointState],
                 exclude: Collection[EndpointId] = ()) -> SchedulingResult:
        """Where ``request`` goes among ``endpoints`` minus ``exclude``; NoEndpointError when none is eligible."""
        ...

    def on_complete(self, request: LLMRequest, result: SchedulingResult, outcome: RequestOutcome) -> None:
        """The scheduled request finished, OK or not."""
        ...

    def on_prefill_complete(self, request: LLMRequest, result: SchedulingResult, outcome: RequestOutcome) -> None:
        """The remote prefill leg (``result.prefill``) ended, OK or not; a no-op when ``result.prefill`` is None."""
        ...

    def remove_endpoint(self, endpoint_id: EndpointId) -> None:
        """Forget everything kept about an endpoint that left the pool."""
        ...

    def in_flight(self) -> int:
        """Results scheduled and not completed yet."""
        ...
