"""The benchmark component."""

from pipelines.components.benchmark.component import benchmark

__all__ = ["benchmark"]
