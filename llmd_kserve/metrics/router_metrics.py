"""The router's own Prometheus metrics (decisions, scheduling latency, cached-token prediction, upstream errors)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from llmd_kserve.metrics.loop_metrics import LoopCounter as Counter
from llmd_kserve.metrics.loop_metrics import LoopHistogram as Histogram

_LATENCY_BUCKETS = (5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2, 0.1, 0.5)
_TOKEN_BUCKETS = (0, 16, 64, 256, 1024, 4096, 16384, 65536)
_TTFB_BUCKETS = (1e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


_MAX_CHILDREN = 4096


def children(metric: Any) -> Callable[..., Any]:
    """``metric.labels(*values)`` memoised: the request path resolves a labelled child with one dict lookup
    instead of prometheus_client's validation, string conversion and lock (bounded: cleared past 4,096 sets)."""
    cache: dict[tuple[str, ...], Any] = {}

    def child(*values: str) -> Any:
        c = cache.get(values)
        if c is None:
            if len(cache) >= _MAX_CHILDREN:
                cache.clear()
            c = cache[values] = metric.labels(*values)
        return c

    return child


class RouterMetrics:
    """Metrics in a registry of their own (so several routers can live in one process, e.g. in tests); updated from
    the event loop's thread only (``loop_metrics``: no lock per update)."""

    def __init__(self, registry: CollectorRegistry | None = None, namespace: str = "llmd_router") -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r, ns = self.registry, namespace
        self.requests = Counter("requests", "Client requests by route and HTTP status (499: the client went away)",
                                ["route", "status"],
                                namespace=ns, registry=r)
        self.decisions = Counter("decisions", "Scheduling decisions per chosen endpoint and profile",
                                 ["endpoint", "profile"], namespace=ns, registry=r)
        self.scheduling_seconds = Histogram("scheduling_seconds", "Time spent in Scheduler.schedule",
                                            buckets=_LATENCY_BUCKETS, namespace=ns, registry=r)
        self.predicted_cached_tokens = Counter("predicted_cached_tokens", "Prompt tokens the scheduler predicted cached",
                                               ["endpoint"], namespace=ns, registry=r)
        self.reported_cached_tokens = Counter("reported_cached_tokens",
                                              "Prompt tokens the engine reported cached (usage.prompt_tokens_details)",
                                              ["endpoint"], namespace=ns, registry=r)
        self.prompt_tokens = Counter("prompt_tokens", "Prompt tokens reported by engines", ["endpoint"],
                                     namespace=ns, registry=r)
        self.cached_tokens_abs_error = Histogram("cached_tokens_abs_error",
                                                 "|predicted - reported| cached prompt tokens per request",
                                                 buckets=_TOKEN_BUCKETS, namespace=ns, registry=r)
        self.upstream_errors = Counter("upstream_errors", "Failed upstream attempts by endpoint and reason",
                                       ["endpoint", "reason"], namespace=ns, registry=r)
        self.retries = Counter("retries", "Requests re-sent to another endpoint after a failure before the first byte",
                               namespace=ns, registry=r)
        self.client_disconnects = Counter("client_disconnects", "Requests cancelled because the client went away",
                                          namespace=ns, registry=r)
        self.ttfb_seconds = Histogram("upstream_ttfb_seconds", "Scheduling start to the first upstream body byte (whole body if not streamed)",
                                      buckets=_TTFB_BUCKETS, namespace=ns, registry=r)
        self.slo_requests = Counter("slo_requests", "Requests with a priority or latency targets (x-llmd-priority, "
                                    "x-llm-d-slo-*) by priority band and outcome: admitted, queued, shed, "
                                    "ttft_met, ttft_missed, tpot_met, tpot_missed", ["band", "outcome"],
                                    namespace=ns, registry=r)
        self.request_count = children(self.requests)
        self.decision_count = children(self.decisions)
        self._predicted = children(self.predicted_cached_tokens)
        self._reported = children(self.reported_cached_tokens)
        self._prompt = children(self.prompt_tokens)

    def observe_cached(self, endpoint: str, predicted: int, reported: int | None, prompt_tokens: int) -> None:
        """Record the scheduler's prediction and, when the engine reported it, the engine's count."""
        self._predicted(endpoint).inc(predicted)
        if prompt_tokens:
            self._prompt(endpoint).inc(prompt_tokens)
        if reported is not None:
            self._reported(endpoint).inc(reported)
            self.cached_tokens_abs_error.observe(abs(predicted - reported))

    def render(self) -> tuple[bytes, str]:
        """Exposition text and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
