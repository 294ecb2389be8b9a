"""The simulate component."""

from pipelines.components.simulate.component import simulate

__all__ = ["simulate"]
