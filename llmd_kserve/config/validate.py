"""Semantic validation of a SchedulerConfig against the plugin registry (types, params, refs, weights, roles)."""

from __future__ import annotations

import math
from typing import Any

import pydantic

from llmd_kserve.builtin import plugin_info
from llmd_kserve.config.schema import SchedulerConfig
from llmd_kserve.errors import ConfigError, config_error_from
from llmd_kserve.plugins.base import PluginParams


def check(config: SchedulerConfig) -> tuple[PluginParams, ...]:
    """The validated Params of ``config.plugins``, in order. Raise ConfigError at the first bad field: unknown type (``plugins[i].type``), bad parameter
    (``plugins[i].parameters.x``), duplicate name, a ``*ProducerName`` parameter naming no producer of a type it can
    read, dangling or misplaced ``pluginRef``, weight on a non-scorer, two pickers in a profile, two profile
    handlers, profile names the handler can't run."""
    names: dict[str, str] = {}  # instance name -> kind
    params: list[PluginParams] = []
    handler_at = None
    for i, spec in enumerate(config.plugins):
        info = plugin_info(spec.type, f"plugins[{i}].type")
        params.append(validate_params(info.params, spec.parameters, f"plugins[{i}].parameters"))
        if spec.ref in names:
            raise ConfigError(f"duplicate plugin name {spec.ref!r}", f"plugins[{i}].name")
        names[spec.ref] = info.kind
        if info.kind == "profile-handler":
            if handler_at is not None:
                raise ConfigError(f"a second profile handler (first at plugins[{handler_at}])", f"plugins[{i}].type")
            handler_at = i
    types = {spec.ref: spec.type for spec in config.plugins}
    for i, plugin_params in enumerate(params):
        _check_producer_refs(plugin_params, types, f"plugins[{i}].parameters")
    seen_profiles: set[str] = set()
    for p, profile in enumerate(config.scheduling_profiles):
        if profile.name in seen_profiles:
            raise ConfigError(f"duplicate profile name {profile.name!r}", f"schedulingProfiles[{p}].name")
        seen_profiles.add(profile.name)
        refs: set[str] = set()
        picker = None
        for j, ref in enumerate(profile.plugins):
            at = f"schedulingProfiles[{p}].plugins[{j}]"
            kind = names.get(ref.plugin_ref)
            if kind is None:
                raise ConfigError(f"no plugin named {ref.plugin_ref!r} in plugins[]", f"{at}.pluginRef")
            if kind in ("producer", "profile-handler"):
                raise ConfigError(f"{ref.plugin_ref!r} is a {kind}: list it under plugins[] only", f"{at}.pluginRef")
            if ref.plugin_ref in refs:
                raise ConfigError(f"{ref.plugin_ref!r} is used twice in this profile", f"{at}.pluginRef")
            refs.add(ref.plugin_ref)
            if ref.weight is not None and kind != "scorer":
                raise ConfigError(f"only scorers take a weight; {ref.plugin_ref!r} is a {kind}", f"{at}.weight")
            if kind == "picker":
                if picker is not None:
                    raise ConfigError(f"a second picker (first: {picker!r})", f"{at}.pluginRef")
                picker = ref.plugin_ref
    if handler_at is not None:
        spec = config.plugins[handler_at]
        handler_cls: Any = plugin_info(spec.type).factory  # the class: its validate_profiles is a classmethod
        problem = handler_cls.validate_profiles([p.name for p in config.scheduling_profiles])
        if problem:
            raise ConfigError(problem, "schedulingProfiles")
    elif len(config.scheduling_profiles) != 1:
        raise ConfigError("several profiles need a profile handler in plugins[]", "schedulingProfiles")
    return tuple(params)


def validate_params(model: type[PluginParams], parameters: object, path: str) -> PluginParams:
    """The plugin's Params from a ``parameters`` mapping; ConfigError at ``path.<field>`` when invalid."""
    if parameters is None:
        parameters = {}
    try:
        params = model.model_validate(parameters)
    except pydantic.ValidationError as e:
        raise config_error_from(e, path) from None
    _require_finite(params.model_dump(by_alias=True), path)
    return params


def _require_finite(value: Any, path: str) -> None:
    """ConfigError at the field holding an infinite or NaN number (``.inf``, ``1e400``, ``"nan"``)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"must be a finite number, got {value}", path)
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list | tuple) else ()
    for k, v in items:
        _require_finite(v, f"{path}.{k}" if isinstance(k, str) else f"{path}[{k}]")


def _check_producer_refs(params: PluginParams, types: dict[str, str], path: str) -> None:
    """llm-d's ``*ProducerName`` parameters name a producer instance in plugins[]: one of the types the plugin reads
    (its Params' ``producer_refs``: field -> types), or ConfigError at that parameter."""
    refs: dict[str, tuple[str, ...]] = getattr(type(params), "producer_refs", {})
    for field, allowed in refs.items():
        name = getattr(params, field)
        if name and types.get(name) not in allowed:
            alias = type(params).model_fields[field].alias or field
            what = "no plugin" if name not in types else f"a {types[name]}"
            raise ConfigError(f"{name!r} is {what} in plugins[]; it must name a {' or '.join(allowed)}",
                              f"{path}.{alias}")
