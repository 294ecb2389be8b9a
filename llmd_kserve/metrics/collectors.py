"""A Prometheus collector for counters the router's parts keep themselves (KV-event subscriber, scraper, ejector)."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

_KV = (("messages", "KV-event messages received"), ("blocks", "KV blocks applied to the index"),
       ("gaps", "Sequence gaps (messages lost)"), ("missed", "Messages missed in sequence gaps"),
       ("restarts", "Publisher restarts (sequence went backwards; the endpoint's index was dropped)"),
       ("decode_errors", "Malformed KV-event messages skipped"),
       ("disconnects", "Connections to the publisher lost (the endpoint's index was dropped)"))


class RouterStatsCollector:
    """Reads the stats when scraped: ``kv_stats()`` (subscriber), ``scrape_stats()`` (scraper), ``ejected()``."""

    def __init__(self, kv_stats: Callable[[], Mapping[Any, Any]], scrape_stats: Callable[[], Mapping[Any, Any]],
                 ejected: Callable[[], Collection[str]], namespace: str = "llmd_router") -> None:
        self._kv, self._scrape, self._ejected, self._ns = kv_stats, scrape_stats, ejected, namespace

    def collect(self) -> Iterator[Metric]:
        kv = self._kv()
        for name, doc in _KV:
            fam = CounterMetricFamily(f"{self._ns}_kv_events_{name}", doc, labels=["endpoint"])
            for eid, st in kv.items():
                fam.add_metric([eid], getattr(st, name))
            yield fam
        scrape = self._scrape()
        for name, doc in (("scrapes", "Good /metrics scrapes of an endpoint"),
                          ("errors", "Failed /metrics scrapes of an endpoint")):
            fam = CounterMetricFamily(f"{self._ns}_endpoint_scrape_{name}", doc, labels=["endpoint"])
            for eid, st in scrape.items():
                fam.add_metric([eid], getattr(st, name))
            yield fam
        gauge = GaugeMetricFamily(f"{self._ns}_endpoint_ejected", "1 while an endpoint is ejected (timeouts)",
                                  labels=["endpoint"])
        for eid in self._ejected():
            gauge.add_metric([eid], 1.0)
        yield gauge
