"""Adapters from where numbers live (bench JSON, Prometheus, the router itself) to the records of ``viz.data``."""

from llmd_kserve.viz.sources.bench import load_bench
from llmd_kserve.viz.sources.prometheus import PrometheusSource
from llmd_kserve.viz.sources.router import RouterSource, SourceError

__all__ = ["PrometheusSource", "RouterSource", "SourceError", "load_bench"]
