"""Pydantic schema of the scheduler config: llm-d's / the Inference Extension's ``EndpointPickerConfig``."""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

API_VERSION = "inference.networking.x-k8s.io/v1alpha1"
"""The API version our shipped configs are written in (the Inference Extension's, as llm-d used it before v1.0)."""
LLMD_API_VERSION = "llm-d.ai/v1"
"""llm-d v1.0's (``llm-d-router``) API version of the same EndpointPickerConfig."""
API_VERSIONS = (API_VERSION, "llm-d.ai/v1alpha1", LLMD_API_VERSION)
"""Every ``apiVersion`` a config may give: the schema is the same, only the group/version moved."""
LLMD_EPP_SECTIONS = {
    "featureGates": "llm-d's EPP feature switches do not apply to this router",
    "dataLayer": "this router scrapes each engine's /metrics itself (no llm-d data layer)",
    "flowControl": "this router's flow control is set on its command line (--flow-per-endpoint …)",
    "saturationDetector": "this router's flow control is set on its command line (--flow-per-endpoint …)",
    "requestHandler": "this router parses OpenAI requests itself (no llm-d request parsers)",
    "parser": "this router parses OpenAI requests itself (no llm-d request parsers)",
}
"""Top-level sections of llm-d's EndpointPickerConfig that configure the rest of its EPP, not the scheduler."""
MAX_WEIGHT = 1_000_000.0
"""Largest scorer weight (scores are in [0, 1]: only ratios between weights matter)."""
MAX_PLUGINS = 1024
MAX_PROFILES = 64


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class PluginSpec(_Model):
    """One plugin instance: ``type`` from the registry, an optional ``name`` (default: the type), ``parameters``
    validated against the type's own Params model."""

    type: str = Field(min_length=1)
    name: str | None = None
    parameters: dict[str, Any] | None = None

    @property
    def ref(self) -> str:
        return self.name or self.type


class ProfilePluginRef(_Model):
    """A plugin used by a profile; ``weight`` (scorers only, default 1) multiplies its clamped score."""

    plugin_ref: str = Field(alias="pluginRef", min_length=1)
    weight: float | None = Field(None, ge=0, le=MAX_WEIGHT, allow_inf_nan=False)


class SchedulingProfile(_Model):
    """Named list of filters (in order), weighted scorers and at most one picker (default ``max-score-picker``)."""

    name: str = Field(min_length=1)
    plugins: list[ProfilePluginRef] = Field(default_factory=list, max_length=MAX_PLUGINS)


class SchedulerConfig(_Model):
    """The whole config. Producers and the profile handler are listed under ``plugins`` only; producers that a
    filter or scorer needs are added automatically, as are ``single-profile-handler`` and ``max-score-picker``."""

    api_version: str = Field(API_VERSION, alias="apiVersion")
    kind: Literal["EndpointPickerConfig"] = "EndpointPickerConfig"
    plugins: list[PluginSpec] = Field(default_factory=list, max_length=MAX_PLUGINS)
    scheduling_profiles: list[SchedulingProfile] = Field(alias="schedulingProfiles", min_length=1,
                                                         max_length=MAX_PROFILES)
    source: str = Field("", exclude=True)
    """Where the config came from (file path or shipped name); not part of the YAML."""

    @field_validator("api_version")
    @classmethod
    def _known_api_version(cls, value: str) -> str:
        if value not in API_VERSIONS:
            raise PydanticCustomError("api_version", "unknown apiVersion {value}; this router reads {known}",
                                      {"value": repr(value), "known": ", ".join(API_VERSIONS)})
        return value

    def document(self) -> dict[str, Any]:
        """The EndpointPickerConfig mapping as written (camelCase keys, unset fields left out, no ``source``)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)

    def digest(self) -> str:
        """Short SHA-256 of the canonical JSON of :meth:`document`: equal configs, equal digests, whatever the source."""
        canon = json.dumps(self.document(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canon.encode()).hexdigest()[:16]
