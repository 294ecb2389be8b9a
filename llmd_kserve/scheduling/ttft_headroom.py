"""The best candidate's predicted TTFT headroom against the deployment's TTFT target: the autoscaling signal each
scheduling decision reports when ``PluginContext.ttft_target_s`` is set."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from llmd_kserve.plugins.base import CycleState, PluginContext
from llmd_kserve.scheduling.ttft import TTFTEstimator, TTFTParams

SAMPLE_INTERVAL_S = 0.02
"""At most one decision per this many seconds (by the context's clock) is measured: the signal is a mean over
seconds, and at high request rates measuring every decision would add to each one's latency."""


class TTFTHeadroom:
    """``headroom(state)``: target minus the smallest predicted TTFT over the cycle's candidates (negative: no
    endpoint is predicted to meet the target). The prediction is ``latency-slo-admitter``'s: the estimator of the
    config's admitter when it has one (its memo is shared, so the admitter's cycles cost nothing more), else one with
    default parameters, reading what the configured producers computed (no prefix match: nothing cached). Returns
    None for a decision it does not measure (:data:`SAMPLE_INTERVAL_S`)."""

    __slots__ = ("target_s", "_ttft", "_clock", "_next_at")

    def __init__(self, target_s: float, plugins: Iterable[Any], ctx: PluginContext) -> None:
        self.target_s = target_s
        admitter = next((p for p in plugins if getattr(p, "type", None) == "latency-slo-admitter"), None)
        self._ttft: TTFTEstimator = admitter._ttft if admitter is not None else TTFTEstimator(TTFTParams(), ctx)
        self._clock = ctx.clock
        self._next_at = float("-inf")

    def __call__(self, state: CycleState) -> float | None:
        now = self._clock()
        if not state.candidates or now < self._next_at:
            return None
        self._next_at = now + SAMPLE_INTERVAL_S
        return self.target_s - min(self._ttft(state, e) for e in state.candidates)
