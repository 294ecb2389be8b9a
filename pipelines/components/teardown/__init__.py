"""The teardown component."""

from pipelines.components.teardown.component import teardown

__all__ = ["teardown"]
