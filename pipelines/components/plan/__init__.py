"""The plan component."""

from pipelines.components.plan.component import plan

__all__ = ["plan"]
