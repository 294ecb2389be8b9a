"""The tune component."""

from pipelines.components.tune.component import tune

__all__ = ["tune"]
