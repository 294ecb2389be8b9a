"""The confirm component."""

from pipelines.components.confirm.component import confirm

__all__ = ["confirm"]
