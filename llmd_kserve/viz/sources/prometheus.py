"""A real Prometheus (``prometheus-api-client``) as a live source: the same totals the router source reads,
as PromQL instant queries over what Prometheus scraped from the router (job ``llmd-router``) and the engines.

``PrometheusSource(url, timeout=2.0)``::

    .scrape() -> Scrape          ``sum(counter)``, ``sum by (le) (histogram_bucket)``, per-instance queue/KV gauges
    .sample() -> LiveSample      the window since the previous ``sample()`` (the first: since the counters began)
    .query(promql) -> float | None                                one instant value (sum of the result vector)
    .wait_ready(targets, timeout=30.0)                            until Prometheus has scraped that many targets

Endpoints are named ``http://<instance>`` so they match the router's endpoint ids. Failures raise
:class:`~llmd_kserve.viz.sources.router.SourceError` with one readable line ("Prometheus at … is not answering").
"""

from __future__ import annotations

import time
from typing import Any

from llmd_kserve.viz.data import EndpointSample, LiveSample
from llmd_kserve.viz.sources.router import SourceError
from llmd_kserve.viz.sources.window import COUNTERS, HISTOGRAMS, LiveWindow, Scrape

_GAUGES = {"waiting": "vllm:num_requests_waiting", "running": "vllm:num_requests_running",
           "kv_usage": "vllm:kv_cache_usage_perc"}


class PrometheusSource:
    """Live numbers from Prometheus' HTTP API."""

    def __init__(self, url: str, timeout: float = 2.0, clock: Any = time.time) -> None:
        try:
            from prometheus_api_client import PrometheusConnect
        except ImportError as exc:  # the notebook extra
            raise SourceError("prometheus-api-client is not installed (pip install 'llmd-kserve[notebook]')") from exc
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._clock = clock
        self._prom = PrometheusConnect(url=self.url, disable_ssl=True, timeout=timeout)
        self._window = LiveWindow()

    def _vector(self, promql: str) -> list[dict[str, Any]]:
        try:
            return list(self._prom.custom_query(promql))
        except Exception as exc:  # requests' ConnectionError, PrometheusApiClientException, timeouts
            text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            if "Connection" in type(exc).__name__ or "Max retries" in text or "refused" in text.lower():
                raise SourceError(f"Prometheus at {self.url} is not answering (connection refused)") from None
            raise SourceError(f"Prometheus at {self.url}: {text[:200]}") from None

    def query(self, promql: str) -> float | None:
        """The sum of an instant vector's values (None when empty)."""
        vec = self._vector(promql)
        return sum(float(v["value"][1]) for v in vec) if vec else None

    def scrape(self) -> Scrape:
        counters: dict[str, float] = {}
        for key, series in COUNTERS.items():
            if key == "answered":
                series = 'llmd_router_requests_total{status="200"}'
            v = self.query(f"sum({series})")
            if v is not None:
                counters[key] = v
        hists: dict[str, dict[float, float]] = {}
        for key, name in HISTOGRAMS.items():
            for item in self._vector(f"sum by (le) ({name}_bucket)"):
                le = item["metric"]["le"]
                hists.setdefault(key, {})[float("inf") if le == "+Inf" else float(le)] = float(item["value"][1])
        per: dict[str, dict[str, float]] = {}
        for field, name in _GAUGES.items():
            for item in self._vector(f"sum by (instance) ({name})"):
                per.setdefault("http://" + item["metric"]["instance"], {})[field] = float(item["value"][1])
        endpoints = tuple(EndpointSample(ep, v.get("waiting", 0.0), v.get("running", 0.0), v.get("kv_usage", 0.0))
                          for ep, v in sorted(per.items()))
        return Scrape(self._clock(), counters, hists, endpoints)

    def wait_ready(self, targets: int, timeout: float = 30.0) -> None:
        """Block until Prometheus has scraped ``targets`` targets successfully (it starts scraping a few seconds
        after it starts); SourceError after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                up = self.query("count(up == 1)") or 0.0
            except SourceError:
                up = 0.0
            if up >= targets:
                return
            if time.monotonic() > deadline:
                raise SourceError(f"Prometheus at {self.url} has scraped {up:g} of {targets} targets after {timeout:g}s")
            time.sleep(0.25)

    def sample(self) -> LiveSample:
        return self._window.update(self.scrape(), source=f"Prometheus {self.url}")

    def since_start(self) -> LiveSample | None:
        return self._window.since_start()
