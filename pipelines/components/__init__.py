"""One folder per component (``<name>/component.py`` + its test), each a thin wrapper of one ``llmd_kserve.steps``
function; ``BASE_IMAGE`` is the image they run in."""

from pipelines.components._base import BASE_IMAGE, DEFAULT_IMAGE

__all__ = ["BASE_IMAGE", "DEFAULT_IMAGE"]
