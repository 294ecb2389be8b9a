"""The report component."""

from pipelines.components.report.component import report

__all__ = ["report"]
