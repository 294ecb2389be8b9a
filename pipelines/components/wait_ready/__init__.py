"""The wait_ready component."""

from pipelines.components.wait_ready.component import wait_ready

__all__ = ["wait_ready"]
