"""Building a Scheduler from a config: validate once, instantiate the registered plugins with their Params, wire."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from llmd_kserve.builtin import DEFAULT_PICKER, DEFAULT_PROFILE_HANDLER, REGISTRY
from llmd_kserve.config.loader import read_config
from llmd_kserve.config.schema import SchedulerConfig
from llmd_kserve.config.validate import check
from llmd_kserve.plugins.base import PluginContext
from llmd_kserve.scheduling.scheduler import ProfileSpec, Scheduler


def build_scheduler(config: str | Path | SchedulerConfig, ctx: PluginContext,
                    carry_over: Scheduler | None = None) -> Scheduler:
    """A Scheduler from a shipped config name, a YAML path, or a SchedulerConfig. The config is checked once here
    and its plugins are built from the Params that check returned; ConfigError names the bad field.

    ``carry_over``: a scheduler this one replaces (config hot reload, same ``ctx``): each of its plugins with the same
    type, instance and parameters is reused as it is, state included (in-flight load, approximate-prefix LRU, session
    map, round-robin cursor); changed plugins start fresh."""
    cfg = config if isinstance(config, SchedulerConfig) else read_config(config)
    params = check(cfg)
    previous = carry_over.built if carry_over is not None else {}
    built: dict[tuple[str, str], tuple[Any, Any]] = {}
    defaults: Counter[str] = Counter()

    def make(type_: str, key: str, name: str, p: Any) -> Any:
        old = previous.get((type_, key))
        plugin = old[1] if old is not None and old[0] == p else REGISTRY[type_].factory(name, p, ctx)
        built[(type_, key)] = (p, plugin)
        return plugin

    def builtin(type_: str) -> Any:  # the n-th default of a type keeps its key across rebuilds of one config
        defaults[type_] += 1
        return make(type_, f"{type_}#{defaults[type_]}", type_, REGISTRY[type_].params())

    plugins = {spec.ref: make(spec.type, spec.ref, spec.ref, p) for spec, p in zip(cfg.plugins, params, strict=True)}
    profiles = [ProfileSpec(p.name, _with_listed_picker(cfg, tuple((r.plugin_ref, r.weight) for r in p.plugins)))
                for p in cfg.scheduling_profiles]
    scheduler = Scheduler(plugins, profiles, ctx, builtin, DEFAULT_PROFILE_HANDLER, DEFAULT_PICKER, config=cfg)
    scheduler.built = built
    return scheduler


def _with_listed_picker(cfg: SchedulerConfig, refs: tuple[tuple[str, float | None], ...]
                        ) -> tuple[tuple[str, float | None], ...]:
    """A profile that names no picker uses the first picker listed in plugins[], as llm-d does (none listed: the
    default ``max-score-picker``, added by the Scheduler)."""
    kinds = {spec.ref: REGISTRY[spec.type].kind for spec in cfg.plugins}
    if any(kinds[ref] == "picker" for ref, _ in refs):
        return refs
    listed = next((ref for ref, kind in kinds.items() if kind == "picker"), None)
    return refs if listed is None else (*refs, (listed, None))
