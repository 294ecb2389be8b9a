"""Time-to-first-token estimate of a request on one endpoint, from its latency profile (memoised per cycle), and the
parameters and binding that the plugins timing endpoints with it share."""

from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from llmd_kserve.errors import ConfigError
from llmd_kserve.plugins.base import CycleState, PluginContext, PluginParams
from llmd_kserve.types import NO_LOAD, PROFILE_LABEL, Endpoint, EndpointId, EndpointState

if TYPE_CHECKING:
    from llmd_kserve.latency import LatencyProfile

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=64)
def _named_profile(name: str) -> LatencyProfile | None:
    from llmd_kserve.latency import load_profile  # noqa: PLC0415 - yaml/pydantic loading only when a label names one

    try:
        return load_profile(name)
    except ConfigError as exc:
        log.warning("endpoint label %s=%r: %s; timing it with the router's profile", PROFILE_LABEL, name, exc)
        return None


def endpoint_profile(endpoint: Endpoint, default: LatencyProfile) -> LatencyProfile:
    """The latency profile that times ``endpoint``: the one its ``PROFILE_LABEL`` label names (mixed GPUs), else
    ``default`` (the router's profile); an unknown name is warned about once and falls back to ``default``."""
    name = endpoint.labels.get(PROFILE_LABEL) if endpoint.labels else None
    if not name:
        return default
    return _named_profile(name) or default


def estimate_ttft(
    state: CycleState,
    endpoint: EndpointState,
    profile: LatencyProfile,
    block_size: int,
    mode: str | None = None,
    tokens_per_waiting_request: int = 512,
    backlog: str = "inflight",
) -> float:
    """Seconds until the first token if the request went to ``endpoint`` now.

    Model: the endpoint first works off its backlog of queued prompt tokens, then prefills this request's uncached
    tokens on top of its cached prefix (``prefill_time`` of the endpoint's own profile, see
    :func:`endpoint_profile`, else ``profile``; chunked by the batch budget). The backlog is the larger of the
    router's own view and ``waiting`` requests from the metrics times ``tokens_per_waiting_request`` (sees other
    routers' load). The router's own view, by ``backlog``: ``"inflight"``, its in-flight uncached tokens (it also
    counts requests long past their prefill and decoding); ``"queue"``, the prefill seconds not yet worked off
    (``state.prefill_backlog``: each request leaves it when its prefill is predicted done). Decode work
    interleaved with the prefill is ignored.
    """
    memo: dict[tuple[str | None, EndpointId, int, str], float] = state.data.setdefault("ttft", {})
    eid = endpoint.endpoint.id
    key = (mode, eid, tokens_per_waiting_request, backlog)
    hit = memo.get(key)
    if hit is not None:
        return hit
    profile = endpoint_profile(endpoint.endpoint, profile)
    cached = state.cached_tokens(eid, block_size, mode)
    uncached = state.prompt_tokens - cached
    waiting = endpoint.metrics.waiting * tokens_per_waiting_request
    prefill: dict[tuple[int, int, int], float] = state.data.setdefault("prefill_time", {})  # per profile: the
    pkey = (id(profile), uncached, cached)  # endpoints that hold the same prefix share it (a fresh prompt: all)
    t = prefill.get(pkey)
    if t is None:
        t = prefill[pkey] = profile.prefill_time(max(uncached, 1), cached)
    if backlog == "queue":
        queued = state.prefill_backlog.get(eid, 0.0) if state.prefill_backlog else 0.0
        if waiting > 0:
            queued = max(queued, profile.prefill_time(waiting, 0) - profile.request_overhead(waiting))
        t += queued
    else:
        if state.inflight is not None:
            waiting = max(waiting, state.inflight.get(eid, NO_LOAD).tokens)
        if waiting > 0:
            t += profile.prefill_time(waiting, 0)
    memo[key] = t
    return t


class TTFTParams(PluginParams):
    """Parameters of the plugins that time endpoints with :func:`estimate_ttft`."""

    mode: Literal["precise", "approx"] = "precise"
    """Which prefix match tells the cached tokens."""
    tokens_per_waiting_request: int = Field(512, ge=0)
    """Prompt tokens assumed per waiting request reported by the metrics."""
    backlog: Literal["inflight", "queue"] = "inflight"
    """The router's view of each endpoint's prefill backlog (``ttft.estimate_ttft``): every in-flight request's
    uncached tokens, or the prefill seconds not yet worked off (requests past their prefill leave it)."""


class TTFTEstimator:
    """:func:`estimate_ttft` bound to a plugin's :class:`TTFTParams` and context: ``estimator(state, endpoint)``."""

    __slots__ = ("requires", "_args")

    def __init__(self, params: TTFTParams, ctx: PluginContext) -> None:
        self.requires: tuple[str, ...] = ("tokenize-producer", f"{params.mode}-prefix-producer",
                                          "inflight-load-producer")
        """The producers whose output the estimate reads."""
        self._args = (ctx.profile, ctx.block_size, params.mode, params.tokens_per_waiting_request, params.backlog)

    def __call__(self, state: CycleState, endpoint: EndpointState) -> float:
        return estimate_ttft(state, endpoint, *self._args)
