"""Building a Scheduler from a config: validate once, instantiate the registered plugins with their Params, wire."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llmd_kserve.builtin import DEFAULT_PICKER, DEFAULT_PROFILE_HANDLER, REGISTRY
from llmd_kserve.config.loader import read_config
from llmd_kserve.config.schema import SchedulerConfig
from llmd_kserve.config.validate import check
from llmd_kserve.plugins.base import PluginContext
from llmd_kserve.scheduling.scheduler import ProfileSpec, Scheduler


def build_scheduler(config: str | Path | SchedulerConfig, ctx: PluginContext) -> Scheduler:
    """A Scheduler from a shipped config name, a YAML path, or a SchedulerConfig. The config is checked once here
    and its plugins are built from the Params that check returned; ConfigError names the bad field."""
    cfg = config if isinstance(config, SchedulerConfig) else read_config(config)
    params = check(cfg)
    plugins = {spec.ref: REGISTRY[spec.type].factory(spec.ref, p, ctx)
               for spec, p in zip(cfg.plugins, params, strict=True)}
    profiles = [ProfileSpec(p.name, tuple((r.plugin_ref, r.weight) for r in p.plugins))
                for p in cfg.scheduling_profiles]

    def builtin(type_: str) -> Any:
        info = REGISTRY[type_]
        return info.factory(type_, info.params(), ctx)

    return Scheduler(plugins, profiles, ctx, builtin, DEFAULT_PROFILE_HANDLER, DEFAULT_PICKER, config=cfg)
