"""Producer ``inflight-load-producer``: requests and uncached prompt tokens the router sent each endpoint and that
have not finished yet."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import ClassVar, Literal

from pydantic import Field

from llmd_kserve.plugins.base import (
    CycleState,
    EndpointRemoved,
    HandlerDecision,
    OnComplete,
    OnPrefillComplete,
    OnScheduled,
    PluginContext,
    PluginParams,
    Scores,
)
from llmd_kserve.scheduling.inflight_tokens import TokenLedger
from llmd_kserve.scheduling.ttft import endpoint_profile
from llmd_kserve.types import NO_LOAD, EndpointId, EndpointState, LLMRequest, Load, RequestOutcome


def inflight_scores(state: CycleState, endpoints: Sequence[EndpointState], field: Literal["requests", "tokens"]) -> Scores:
    """``(max - load) / max`` over the candidates for one field of ``state.inflight`` (requests or uncached
    tokens); 1.0 for all when nothing is in flight."""
    load = state.inflight or {}
    values: list[int] = [getattr(load.get(e.endpoint.id, NO_LOAD), field) for e in endpoints]
    hi = max(values, default=0)
    if hi <= 0:
        return {e.endpoint.id: 1.0 for e in endpoints}
    return {e.endpoint.id: (hi - v) / hi for e, v in zip(endpoints, values, strict=True)}


class _Lazy(Mapping[EndpointId, Load]):
    """A mapping computed on first use: ``state.unscraped`` costs nothing when no scorer reads it (one candidate).
    The scorers read it inside ``schedule``, before any charge changes; read later, it shows the charges then."""

    __slots__ = ("_make", "_d")

    def __init__(self, make: Callable[[], dict[EndpointId, Load]]) -> None:
        self._make: Callable[[], dict[EndpointId, Load]] | None = make
        self._d: dict[EndpointId, Load] = {}

    def _get(self) -> dict[EndpointId, Load]:
        if self._make is not None:
            self._d, self._make = self._make(), None
        return self._d

    def __getitem__(self, key: EndpointId) -> Load:
        return self._get()[key]

    def get(self, key: EndpointId, default: Load | None = None) -> Load | None:  # type: ignore[override]
        """The dict's own ``get`` (``Mapping.get`` goes through ``__getitem__`` and a try/except per call)."""
        return self._get().get(key, default)

    def __iter__(self) -> Iterator[EndpointId]:
        return iter(self._get())

    def __len__(self) -> int:
        return len(self._get())


class InflightLoadProducer(OnScheduled, OnComplete, OnPrefillComplete, EndpointRemoved):
    """The router's own, instantly updated view of load (metrics lag by a scrape interval):
    ``state.inflight[endpoint] = Load(requests, uncached prompt tokens)``, and the part of it charged after the
    endpoint's last metrics scrape, ``state.unscraped`` (load the scraped ``waiting``/``kv_usage`` cannot show yet;
    the queue and KV-utilization scorers add it, so that a burst between two scrapes is spread, not herded).

    It also keeps a fluid queue of prefill work per endpoint, ``state.prefill_backlog`` (seconds): each scheduled
    request adds its uncached prefill time on the endpoint's own latency profile (``ttft.endpoint_profile``; the
    P/D prefill endpoint in P/D), and the queue drains one second per second. Unlike the in-flight tokens it forgets
    a request once its prefill is predicted done, so an endpoint busy with long decodes does not look backlogged.

    A scheduled request is charged to its target (and, in P/D, its prefill endpoint carries the uncached tokens)
    until ``on_complete`` (the prefill endpoint's charge already at ``on_prefill_complete``); entries older than
    ``requestTimeoutS`` (lost completions) expire. Uncached tokens count
    the prompt minus the prefix the best known prefix match says the endpoint holds.

    For llm-d v1.0's plugins it also keeps llm-d's token view (:mod:`llmd_kserve.scheduling.inflight_tokens`):
    prompt tokens released when the prefill is over, optionally plus estimated output tokens (llm-d's parameters
    ``addEstimatedOutputTokens``, ``outputRatio``, ``maxEstimatedOutputTokens``, ``prefixMatchInfoProducerName``).
    The scheduler turns that view off (:meth:`keep_token_view`) when no plugin of its config reads it.
    """

    type: ClassVar[str] = "inflight-load-producer"
    kind: ClassVar[str] = "producer"

    class Params(PluginParams):
        request_timeout_s: float = Field(600.0, gt=0)
        """An in-flight entry older than this is dropped (its completion was lost)."""
        scrape_lag_s: float = Field(0.0, ge=0)
        """A request charged up to this long before a scrape counts as unscraped too (it may not have reached the
        engine's queue when the engine was scraped: router hop, front end)."""
        add_estimated_output_tokens: bool = False
        """llm-d: also count an estimate of each request's output tokens, until it finishes."""
        output_ratio: float = Field(1.5, ge=0)
        """llm-d: estimated output = round(prompt tokens * this), at most the request's own output limit."""
        max_estimated_output_tokens: int | None = Field(None, ge=0)
        """llm-d: cap on one request's estimated output tokens (none: no cap)."""
        prefix_match_info_producer_name: str = ""
        """llm-d: the prefix producer whose match discounts cached tokens in llm-d's view (an
        ``approx-prefix-cache-producer`` or ``precise-prefix-producer`` in plugins[]; empty: the
        ``approx-prefix-cache-producer`` if configured, else the best known match)."""
        sync_cross_replica_state: bool = True
        """llm-d: share the load across router replicas through a cross-replica syncer; this router has none, so
        each replica counts its own requests either way."""
        producer_refs: ClassVar[dict[str, tuple[str, ...]]] = {
            "prefix_match_info_producer_name": ("approx-prefix-cache-producer", "precise-prefix-producer")}

    requires: tuple[str, ...] = ("tokenize-producer",)

    def __init__(self, name: str, params: Params, ctx: PluginContext) -> None:
        self.name = name
        self._clock = ctx.clock
        self._block_size = ctx.block_size
        self._profile = ctx.profile
        self._timeout = params.request_timeout_s
        self._lag = params.scrape_lag_s
        self._load: dict[EndpointId, Load] = {}
        # (request id, endpoint) -> (charged tokens, time charged); insertion order = time order
        self._charges: OrderedDict[tuple[str, EndpointId], tuple[int, float]] = OrderedDict()
        self._queue: dict[EndpointId, tuple[float, float]] = {}  # endpoint -> (prefill seconds queued, as of time)
        ratio = params.output_ratio if params.add_estimated_output_tokens else None
        self.tokens = TokenLedger(name, self.type, output_ratio=ratio, output_cap=params.max_estimated_output_tokens,
                                  prefix_producer=params.prefix_match_info_producer_name,
                                  block_size=ctx.block_size, clock=ctx.clock, timeout_s=params.request_timeout_s)
        """llm-d's in-flight token view."""
        self.keeps_tokens = True
        """Whether ``tokens`` is kept (off: no plugin reads it, see :meth:`keep_token_view`)."""

    def keep_token_view(self, on: bool) -> None:
        """Keep llm-d's token view (``tokens``) or not. Turned on again (a config reload added a plugin that reads
        it), it starts from the requests in flight now, with their uncached prompt tokens as charged here."""
        if on == self.keeps_tokens:
            return
        self.keeps_tokens = on
        self.tokens.clear()
        if on:
            for (rid, ep), (tokens, at) in self._charges.items():
                self.tokens.restore(rid, ep, tokens, at)

    def produce(self, state: CycleState) -> None:
        self._expire()
        state.inflight = self._load
        state.unscraped = _Lazy(lambda: self._unscraped(state)) if self._charges else {}
        state.prefill_backlog = self.prefill_backlog() if self._queue else {}
        if self.keeps_tokens:
            self.tokens.publish(state)

    def prefill_backlog(self) -> dict[EndpointId, float]:
        """Seconds of prefill work each endpoint has not worked off yet (endpoints with none are absent)."""
        now = self._clock()
        out: dict[EndpointId, float] = {}
        for ep, (queued, at) in list(self._queue.items()):
            left = queued - (now - at)
            if left > 0:
                out[ep] = left
            else:
                del self._queue[ep]
        return out

    def _enqueue(self, state: CycleState, endpoint_id: EndpointId, uncached: int) -> None:
        """Add the request's predicted prefill time on ``endpoint_id`` to that endpoint's fluid queue."""
        profile = self._profile
        for c in state.candidates:  # (a loop: a generator expression is two more calls per request)
            if c.endpoint.id == endpoint_id:
                profile = endpoint_profile(c.endpoint, profile)
                break
        n = state.prompt_tokens
        work = profile.prefill_time(max(uncached, 1), n - uncached) - profile.request_overhead(n)
        now = self._clock()
        queued, at = self._queue.get(endpoint_id, (0.0, now))
        self._queue[endpoint_id] = (max(0.0, queued - (now - at)) + max(work, 0.0), now)

    def _unscraped(self, state: CycleState) -> dict[EndpointId, Load]:
        """Charges newer than each candidate's scrape. A candidate scraped before the oldest charge has all of its
        charges unscraped: its whole load (``_load`` sums its charges), no walk; the others walk the charges newest
        first, so O(charges since the oldest such candidate's scrape)."""
        if not self._charges:
            return {}
        first_at = next(iter(self._charges.values()))[1]  # charges are in time order (a re-charge moves to the end)
        lag, load = self._lag, self._load
        out: dict[EndpointId, Load] = {}
        scraped: dict[EndpointId, float] = {}
        for e in state.candidates:
            eid = e.endpoint.id
            since = e.metrics.scraped_at - lag
            if since < first_at:
                whole = load.get(eid)
                if whole is not None:
                    out[eid] = whole
            else:
                scraped[eid] = since
        if not scraped:
            return out
        oldest = min(scraped.values())
        for (_, ep), (tokens, at) in reversed(self._charges.items()):
            if at <= oldest:
                break
            seen = scraped.get(ep)
            if seen is not None and at > seen:
                reqs, toks = out.get(ep, NO_LOAD)
                out[ep] = Load(reqs + 1, toks + tokens)
        return out

    def load(self, endpoint_id: EndpointId) -> Load:
        """Requests and uncached tokens currently charged to one endpoint."""
        return self._load.get(endpoint_id, NO_LOAD)

    def on_scheduled(self, state: CycleState, decision: HandlerDecision) -> None:
        rid = state.request.request_id
        prefill = decision.target if decision.prefill is None else decision.prefill
        uncached = state.prompt_tokens - state.cached_tokens(prefill, self._block_size)
        if decision.prefill is not None:
            self._charge(rid, decision.target, 0)
        self._charge(rid, prefill, uncached)
        done_at = None
        if state.prompt_tokens:
            self._enqueue(state, prefill, uncached)
            queued, at = self._queue[prefill]
            done_at = at + queued
        if self.keeps_tokens:
            self.tokens.charge(state, decision, done_at)

    def on_complete(self, request: LLMRequest, decision: HandlerDecision, outcome: RequestOutcome) -> None:
        self._release(request.request_id, decision.target)
        if self.keeps_tokens:
            self.tokens.finish(request.request_id, decision.target)
        if decision.prefill is not None:
            self._release(request.request_id, decision.prefill)
            if self.keeps_tokens:
                self.tokens.finish(request.request_id, decision.prefill)

    def on_prefill_complete(self, request: LLMRequest, decision: HandlerDecision, outcome: RequestOutcome) -> None:
        """The prefill endpoint is done with the request: release its charge now (the decode charge stays)."""
        if decision.prefill is not None:
            self._release(request.request_id, decision.prefill)
            if self.keeps_tokens:
                self.tokens.finish(request.request_id, decision.prefill)
                self.tokens.release_prompt(request.request_id, decision.target)

    def remove_endpoint(self, endpoint_id: EndpointId) -> None:
        self._load.pop(endpoint_id, None)
        self._queue.pop(endpoint_id, None)
        self.tokens.remove_endpoint(endpoint_id)
        for key in [k for k in self._charges if k[1] == endpoint_id]:
            del self._charges[key]

    def _charge(self, request_id: str, endpoint_id: EndpointId, tokens: int) -> None:
        key = (request_id, endpoint_id)
        if key in self._charges:  # scheduled twice without completing: replace the old charge
            self._release(request_id, endpoint_id)
        self._charges[key] = (tokens, self._clock())
        reqs, toks = self._load.get(endpoint_id, NO_LOAD)
        self._load[endpoint_id] = Load(reqs + 1, toks + tokens)

    def _release(self, request_id: str, endpoint_id: EndpointId) -> None:
        charge = self._charges.pop((request_id, endpoint_id), None)
        if charge is None:
            return
        load = self._load.get(endpoint_id)
        reqs, toks = (1, charge[0]) if load is None else load
        if reqs <= 1:
            self._load.pop(endpoint_id, None)
        else:
            self._load[endpoint_id] = Load(reqs - 1, max(0, toks - charge[0]))

    def _expire(self) -> None:
        if not self._charges:
            return
        deadline = self._clock() - self._timeout
        while self._charges:
            (rid, ep), (_, at) = next(iter(self._charges.items()))
            if at > deadline:
                break
            self._release(rid, ep)
