"""Stall detection: a request far past its predicted time without a byte marks its endpoint suspect at once.

An engine whose generation hangs still answers ``/health`` and ``/metrics``, so neither the scraper nor the health
filter notices it, and the hard first-byte timeout (minutes) is the only other guard. Each attempt gets a budget:
``factor`` times the latency profile's prediction for that endpoint and prompt (the prefill of the uncached tokens,
the queue the endpoint reports and the attempts already waiting on it here; for an answer that is not streamed, its
decode too), never under ``floor_s``; a stream gets the same between two chunks (``factor`` times one decode step,
never under ``floor_s``). When a budget runs out and the endpoint answered nothing else meanwhile (else it is alive
and just busy: another budget), the endpoint turns **suspect**: the director picks it no more, and
every attempt still waiting on it for a first byte is interrupted (the router retries it elsewhere). A suspect comes
back only when a probe - a real one-token completion - answers 200: a hung generation still answers ``/health`` and
``/metrics``, so only a generated token proves progress. While every candidate is suspect, none is (routing
somewhere beats refusing everything).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field

import msgspec
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from llmd_kserve.control.engine_api import EngineCall
from llmd_kserve.defaults import STALL_FACTOR, STALL_FLOOR_S
from llmd_kserve.latency import LatencyProfile
from llmd_kserve.scheduling.ttft import endpoint_profile
from llmd_kserve.types import EndpointId, EndpointState

log = logging.getLogger(__name__)
_encode = msgspec.json.Encoder().encode
WAITING_PROMPT_TOKENS = 512
"""Prompt tokens assumed per request an endpoint reports waiting (as ``scheduling.ttft`` assumes)."""


@dataclass(frozen=True, slots=True)
class StallPolicy:
    factor: float = STALL_FACTOR
    """Budget = ``factor`` x predicted time; 0 turns stall detection off."""
    floor_s: float = STALL_FLOOR_S
    """No budget is shorter (prediction errors, scheduling noise, a busy machine)."""
    probe_interval_s: float = 1.0
    probe_timeout_s: float = 5.0


@dataclass(slots=True, eq=False)
class Watch:
    """One attempt on one endpoint, watched until its first byte (and, streamed, between chunks)."""

    endpoint: EndpointId
    loop: asyncio.AbstractEventLoop = field(repr=False)
    predicted_s: float
    budget_s: float
    gap_s: float
    stalled: bool = False
    """The endpoint was found stalled while this attempt waited on it."""
    interrupt: Callable[[], None] | None = None
    """Ends the wait for the first byte now (the router's retry); None: the front end cannot retry."""
    interrupted: bool = False
    """``interrupt`` ended the wait."""
    started: float = 0.0
    """Loop time the current budget began."""
    timer: asyncio.TimerHandle | None = field(default=None, repr=False)


class StallWatch:
    """Budgets per attempt, suspect endpoints, the probes that clear them (all on the event loop's clock)."""

    def __init__(self, policy: StallPolicy, profile: LatencyProfile, *, sees_answers: bool = True) -> None:
        self.policy = policy
        self.profile = profile
        self.watches_attempts = policy.factor > 0 and sees_answers
        """Whether attempts are watched: the front end sees answers begin (the EPP in ``headers`` mode does not,
        and only skips suspects that another front end or an operator marked)."""
        self.suspect: dict[EndpointId, float] = {}
        """Suspect endpoint -> loop time it was marked."""
        self.stalls: dict[EndpointId, int] = {}
        """Stalls detected per endpoint (``llmd_router_stalls_total``)."""
        self._waiting: dict[EndpointId, set[Watch]] = {}
        self._waiting_s: dict[EndpointId, float] = {}
        """The predicted seconds of each endpoint's waiting attempts, summed (kept as they come and go)."""
        self._progress: dict[EndpointId, float] = {}
        """Loop time an endpoint last answered something (a first byte, a chunk): alive, maybe just busy."""
        self.loop: asyncio.AbstractEventLoop | None = None
        """The front end's loop, bound at start (on CPython 3.11 each ``get_running_loop()`` costs a syscall)."""

    @property
    def enabled(self) -> bool:
        return self.policy.factor > 0

    # --- attempts -------------------------------------------------------------------------------------------------
    def begin(self, state: EndpointState, prompt_tokens: int, cached_tokens: int, max_tokens: int,
              stream: bool) -> Watch | None:
        """Start watching an attempt sent to ``state`` now (before its first byte); None outside an event loop
        (nothing is sent there)."""
        loop = self.loop
        if loop is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return None
        p, policy = endpoint_profile(state.endpoint, self.profile), self.policy
        eid = state.endpoint.id
        waiting = self._waiting.setdefault(eid, set())
        step = p.step_time(0, 0, max(1, state.metrics.running + 1), prompt_tokens + max_tokens)
        predicted = p.prefill_time(max(prompt_tokens - cached_tokens, 1), cached_tokens)
        predicted += self._waiting_s.get(eid, 0.0) if waiting else 0.0
        if state.metrics.waiting:
            predicted += p.prefill_time(state.metrics.waiting * WAITING_PROMPT_TOKENS, 0)
        if not stream:
            predicted += max_tokens * step
        w = Watch(eid, loop, predicted, max(policy.floor_s, policy.factor * predicted),
                  max(policy.floor_s, policy.factor * step))
        waiting.add(w)
        self._waiting_s[eid] = self._waiting_s.get(eid, 0.0) + w.predicted_s if len(waiting) > 1 else w.predicted_s
        w.started = loop.time()
        w.timer = loop.call_later(w.budget_s, self._expired, w)
        return w

    def first_byte(self, w: Watch) -> None:
        """The attempt's first byte arrived: its first-byte budget no longer runs."""
        self._progress[w.endpoint] = w.loop.time()
        self._unwait(w)

    def streaming(self, w: Watch, last_data: Callable[[], float], paused: Callable[[], bool]) -> None:
        """Watch a stream's gaps: ``last_data()`` (loop time of its last chunk), ``paused()`` (a slow client)."""
        loop = w.loop

        def check() -> None:
            last = last_data()
            silent = loop.time() - last
            if silent >= w.gap_s and not paused():
                self.mark(w.endpoint, f"no chunk for {silent:.1f} s mid-stream", loop.time())
                w.timer = None
                return
            if last > self._progress.get(w.endpoint, 0.0):
                self._progress[w.endpoint] = last
            w.timer = loop.call_later(max(w.gap_s - silent, 0.05), check)

        w.timer = loop.call_later(w.gap_s, check)

    def end(self, w: Watch | None) -> None:
        """The attempt ended, however."""
        if w is not None:
            self._unwait(w)

    def _unwait(self, w: Watch) -> None:
        if w.timer is not None:
            w.timer.cancel()
            w.timer = None
        waiting = self._waiting.get(w.endpoint)
        if waiting is not None and w in waiting:
            waiting.remove(w)
            left = self._waiting_s.get(w.endpoint, 0.0) - w.predicted_s
            self._waiting_s[w.endpoint] = left if waiting else 0.0  # none left: no rounding residue either

    def _expired(self, w: Watch) -> None:
        """The budget ran out: a stall, unless the endpoint answered another request meanwhile (then it is alive
        and busy beyond the prediction, and the attempt gets another budget)."""
        loop = w.loop
        if self._progress.get(w.endpoint, 0.0) > w.started:
            w.started = loop.time()
            w.timer = loop.call_later(w.budget_s, self._expired, w)
            return
        w.timer = None
        self.mark(w.endpoint, f"no first byte after {w.budget_s:.1f} s (predicted {w.predicted_s:.2f} s)",
                  loop.time())

    def mark(self, endpoint: EndpointId, why: str, now: float) -> None:
        """A stall on ``endpoint`` found at loop time ``now``: count it, make it suspect, interrupt the attempts
        waiting on it."""
        self.stalls[endpoint] = self.stalls.get(endpoint, 0) + 1
        if endpoint not in self.suspect:
            log.warning("endpoint %s is suspect: %s; no new requests until a probe answers", endpoint, why)
            self.suspect[endpoint] = now
        self._waiting_s.pop(endpoint, None)
        for w in list(self._waiting.pop(endpoint, ())):
            w.stalled = True
            if w.timer is not None:
                w.timer.cancel()
                w.timer = None
            if w.interrupt is not None:
                w.interrupt()

    # --- routing --------------------------------------------------------------------------------------------------
    def suspects(self, candidates: Collection[EndpointId]) -> set[EndpointId]:
        """The candidates that are suspect; empty when that would be all of them."""
        if not self.suspect:
            return set()
        out = {e for e in candidates if e in self.suspect}
        return set() if len(out) >= len(candidates) else out

    def forget(self, endpoint: EndpointId) -> None:
        """The endpoint left the pool."""
        self.suspect.pop(endpoint, None)
        self._progress.pop(endpoint, None)
        self._waiting_s.pop(endpoint, None)
        for w in self._waiting.pop(endpoint, ()):
            if w.timer is not None:
                w.timer.cancel()

    # --- probes ---------------------------------------------------------------------------------------------------
    async def probe(self, call: EngineCall, endpoint: EndpointId, model: str) -> bool:
        """One real one-token completion on ``endpoint``; True (and no longer suspect) when it answered 200."""
        body = _encode({"model": model, "prompt": "ping", "max_tokens": 1, "stream": False})
        try:
            status, _ = await call(endpoint, "/v1/completions", body, self.policy.probe_timeout_s)
        except (OSError, TimeoutError, ValueError) as exc:
            log.debug("probe of suspect %s failed: %r", endpoint, exc)
            return False
        if status != 200:
            return False
        if self.suspect.pop(endpoint, None) is not None:
            log.warning("endpoint %s answered a probe: back in routing", endpoint)
        return True

    async def run_probes(self, call: EngineCall, model: Callable[[], str]) -> None:
        """Probe every suspect endpoint each ``probe_interval_s`` until cancelled; binds the watch to this loop."""
        self.loop = asyncio.get_running_loop()
        try:
            while True:
                await asyncio.sleep(self.policy.probe_interval_s)
                if self.suspect:
                    await asyncio.gather(*(self.probe(call, e, model()) for e in list(self.suspect)))
        finally:
            self.loop = None

    def describe(self, endpoint: EndpointId) -> dict[str, object]:
        """The line ``/debug/endpoints`` shows for ``endpoint``."""
        since = self.suspect.get(endpoint)
        age = None if since is None else round(asyncio.get_running_loop().time() - since, 3)
        return {"suspect": since is not None, "suspect_for_s": age, "stalls": self.stalls.get(endpoint, 0)}


class StallCollector:
    """``llmd_router_stalls_total{endpoint}`` and ``llmd_router_endpoint_suspect{endpoint}`` when scraped."""

    def __init__(self, watch: StallWatch, namespace: str = "llmd_router") -> None:
        self._watch, self._ns = watch, namespace

    def collect(self) -> Iterator[Metric]:
        stalls = CounterMetricFamily(f"{self._ns}_stalls", "Requests found stalled (no byte within their budget)",
                                     labels=["endpoint"])
        for eid, n in list(self._watch.stalls.items()):
            stalls.add_metric([eid], n)
        yield stalls
        gauge = GaugeMetricFamily(f"{self._ns}_endpoint_suspect", "1 while an endpoint is suspect (stalled)",
                                  labels=["endpoint"])
        for eid in list(self._watch.suspect):
            gauge.add_metric([eid], 1.0)
        yield gauge
