"""Filters ``role-filter``, ``decode-filter``, ``prefill-filter``: keep endpoints that serve a role."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Literal

from llmd_kserve.plugins.base import CycleState, PluginContext, PluginParams
from llmd_kserve.types import EndpointState


class RoleFilter:
    """Keeps endpoints whose role is ``role`` or ``both`` (a ``both`` endpoint serves either phase)."""

    type: ClassVar[str] = "role-filter"
    kind: ClassVar[str] = "filter"

    class Params(PluginParams):
        role: Literal["prefill", "decode"] = "decode"

    requires: tuple[str, ...] = ()

    def __init__(self, name: str, params: Params, ctx: PluginContext) -> None:
        self.name = name
        self.role = params.role

    def filter(self, state: CycleState, endpoints: Sequence[EndpointState]) -> Sequence[EndpointState]:
        role = self.role
        return [e for e in endpoints if e.endpoint.role == role or e.endpoint.role == "both"]


class DecodeFilter(RoleFilter):
    """llm-d's ``decode-filter``: ``role-filter`` with role ``decode``."""

    type: ClassVar[str] = "decode-filter"

    class Params(PluginParams):
        role: Literal["decode"] = "decode"


class PrefillFilter(RoleFilter):
    """llm-d's ``prefill-filter``: ``role-filter`` with role ``prefill``."""

    type: ClassVar[str] = "prefill-filter"

    class Params(PluginParams):
        role: Literal["prefill"] = "prefill"
