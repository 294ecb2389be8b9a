"""The autoscaling signals the router and the EPP export under one set of names (``llmd_router_*``): requests waiting
per priority band, the best endpoint's predicted TTFT headroom against the deployment's TTFT target, mean KV-cache
usage and ready endpoints per role. Read when scraped; docs/metrics.md says what each one means."""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence

from prometheus_client.core import GaugeMetricFamily, Metric

from llmd_kserve.types import ROLES, EndpointState

HEADROOM_WINDOW_S = 10.0
"""The TTFT headroom is the mean over the scheduling decisions of this many last seconds."""
ALWAYS_BANDS = ("0",)
"""Priority bands exported (as 0) before any request of theirs waited: the default band."""


class HeadroomMeter:
    """The TTFT headroom of recent scheduling decisions (``SchedulingResult.ttft_headroom_s``), as one number.

    Its value: the mean over the decisions of the last ``window_s`` seconds (one-second buckets: O(1) per decision);
    with none in the window, the last decision's headroom while requests are still queued or in flight, and the
    whole target once the router is idle (nothing waits, so a request arriving now would wait for nothing but its
    own prefill)."""

    def __init__(self, target_s: float, window_s: float = HEADROOM_WINDOW_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not (target_s > 0 and window_s > 0):
            raise ValueError("the TTFT target and the window must be > 0")
        self.target_s = target_s
        self.window_s = window_s
        self._clock = clock
        self._buckets: deque[list[float]] = deque()  # [second, sum, count]
        self._last: float | None = None

    def observe(self, headroom_s: float) -> None:
        if not math.isfinite(headroom_s):
            return
        sec = math.floor(self._clock())
        if self._buckets and self._buckets[-1][0] == sec:
            b = self._buckets[-1]
            b[1] += headroom_s
            b[2] += 1
        else:
            self._buckets.append([sec, headroom_s, 1])
            self._prune()
        self._last = headroom_s

    def _prune(self) -> None:
        oldest = math.floor(self._clock() - self.window_s)
        while self._buckets and self._buckets[0][0] < oldest:
            self._buckets.popleft()

    def value(self, busy: bool) -> float:
        """The headroom now; ``busy``: requests are queued or in flight in this router."""
        self._prune()
        n = sum(b[2] for b in self._buckets)
        if n:
            return sum(b[1] for b in self._buckets) / n
        if busy and self._last is not None:
            return self._last
        return self.target_s


class HeldRequests:
    """Requests the director holds back per priority band (``latency-slo-admitter`` with ``onMiss: queue``)."""

    def __init__(self) -> None:
        self.by_band: dict[str, int] = {}

    def enter(self, band: str) -> None:
        self.by_band[band] = self.by_band.get(band, 0) + 1

    def leave(self, band: str) -> None:
        self.by_band[band] = max(0, self.by_band.get(band, 0) - 1)

    def total(self) -> int:
        return sum(self.by_band.values())


def role_of(state: EndpointState) -> str:
    return state.endpoint.role


class AutoscalingCollector:
    """``llmd_router_queue_depth{band}``, ``llmd_router_ttft_slo_seconds``, ``llmd_router_ttft_headroom_seconds``,
    ``llmd_router_kv_usage_ratio{role}``, ``llmd_router_endpoints_ready{role}`` and
    ``llmd_router_endpoints{role}`` (with ``pool_name``, llm-d's ``inference_pool_*{name}`` too), computed when
    scraped from the callables it is given."""

    def __init__(self, queue_depth: Callable[[], Mapping[str, int]], endpoints: Callable[[], Sequence[EndpointState]],
                 ready: Callable[[EndpointState], bool], in_flight: Callable[[], int],
                 headroom: HeadroomMeter | None = None, pool_name: str | None = None,
                 namespace: str = "llmd_router") -> None:
        self._queue, self._endpoints, self._ready, self._in_flight = queue_depth, endpoints, ready, in_flight
        self._headroom = headroom
        self._pool = pool_name
        self._ns = namespace
        self._bands: set[str] = set(ALWAYS_BANDS)

    def collect(self) -> Iterator[Metric]:
        ns = self._ns
        depth = dict(self._queue())
        self._bands.update(depth)
        fam = GaugeMetricFamily(f"{ns}_queue_depth", "Requests waiting in this router and not yet sent to an engine, "
                                "per priority band: queued by flow control plus held by latency-slo-admitter "
                                "(onMiss: queue)", labels=["band"])
        for band in sorted(self._bands, key=_band_order):
            fam.add_metric([band], float(depth.get(band, 0)))
        yield fam
        if self._headroom is not None:
            busy = any(depth.values()) or self._in_flight() > 0
            yield GaugeMetricFamily(f"{ns}_ttft_slo_seconds", "The TTFT target the headroom is measured against "
                                    "(--ttft-slo-ms)", value=self._headroom.target_s)
            yield GaugeMetricFamily(f"{ns}_ttft_headroom_seconds", "TTFT target minus the best endpoint's predicted "
                                    "TTFT (latency-slo-admitter's prediction), mean over the last "
                                    f"{self._headroom.window_s:g} s of scheduling decisions (one per 20 ms at most); "
                                    "negative: no endpoint is predicted to meet the target",
                                    value=self._headroom.value(busy))
        states = list(self._endpoints())
        usage = GaugeMetricFamily(f"{ns}_kv_usage_ratio", "Mean KV-cache usage (vllm:kv_cache_usage_perc, 0..1) over "
                                  "the ready endpoints of a role", labels=["role"])
        ready = GaugeMetricFamily(f"{ns}_endpoints_ready", "Endpoints of a role that may take requests: fresh "
                                  "metrics, not ejected, not suspected of a stall", labels=["role"])
        known = GaugeMetricFamily(f"{ns}_endpoints", "Endpoints of a role in the pool", labels=["role"])
        for role in ROLES:
            mine = [s for s in states if role_of(s) == role]
            if not mine:
                continue
            up = [s for s in mine if self._ready(s)]
            known.add_metric([role], float(len(mine)))
            ready.add_metric([role], float(len(up)))
            if up:
                usage.add_metric([role], sum(s.metrics.kv_usage for s in up) / len(up))
        yield usage
        yield ready
        yield known
        if self._pool is not None:
            yield from inference_pool_gauges(self._pool, [s for s in states if self._ready(s)])


def inference_pool_gauges(pool: str, ready: Sequence[EndpointState]) -> Iterator[Metric]:
    """llm-d's (Gateway API Inference Extension's) pool gauges, for dashboards and HPAs written against its EPP:
    means over the pool's ready endpoints of the engines' own numbers (0 with none ready)."""
    n = len(ready)
    for name, doc, value in (
            ("inference_pool_average_kv_cache_utilization", "The average kv cache utilization for an inference "
             "server pool", sum(s.metrics.kv_usage for s in ready) / n if n else 0.0),
            ("inference_pool_average_queue_size", "The average number of requests pending in the model server queue",
             sum(s.metrics.waiting for s in ready) / n if n else 0.0),
            ("inference_pool_average_running_requests", "The average number of requests running on the model "
             "servers", sum(s.metrics.running for s in ready) / n if n else 0.0),
            ("inference_pool_ready_pods", "The number of ready pods in the inference server pool", float(n))):
        fam = GaugeMetricFamily(name, doc, labels=["name"])
        fam.add_metric([pool], value)
        yield fam


def _band_order(band: str) -> tuple[int, str]:
    try:
        return (-int(band), band)
    except ValueError:
        return (0, band)
