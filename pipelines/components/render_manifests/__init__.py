"""The render_manifests component."""

from pipelines.components.render_manifests.component import render_manifests

__all__ = ["render_manifests"]
