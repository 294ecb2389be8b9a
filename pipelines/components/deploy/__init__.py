"""The deploy component."""

from pipelines.components.deploy.component import deploy

__all__ = ["deploy"]
