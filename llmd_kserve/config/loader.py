"""Loading and validating scheduler configs: shipped names or YAML files, errors with the path of the bad field.

Config text is parsed without YAML aliases (an alias bomb expands a few hundred bytes into gigabytes) and no
deeper than ``MAX_DEPTH`` levels, whether it comes from a file, the admin API or a notebook mapping.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import pydantic
import yaml

from llmd_kserve.config.schema import LLMD_EPP_SECTIONS, SchedulerConfig
from llmd_kserve.config.validate import check
from llmd_kserve.defaults import PD_SHIPPED_CONFIGS, SHIPPED_CONFIGS
from llmd_kserve.errors import ConfigError, config_error_from, error_path  # noqa: F401  (error_path: re-export)

SHIPPED = SHIPPED_CONFIGS
PD_SHIPPED = PD_SHIPPED_CONFIGS
MAX_DEPTH = 32
"""Deepest nesting of mappings and lists a config may have (the deepest shipped one has 5)."""
_YamlLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def shipped_configs() -> tuple[str, ...]:
    """Names of every config shipped in ``llmd_kserve/config/shipped/``: the single-profile ones (``SHIPPED``),
    then the P/D ones (``PD_SHIPPED``)."""
    return SHIPPED + PD_SHIPPED


def load_config(name_or_path: str | Path) -> SchedulerConfig:
    """A shipped config by name (``"precise-prefix"``) or a YAML file by path, parsed and fully validated
    (plugin types, parameters, references, weights). Raises ConfigError naming the bad field."""
    config = read_config(name_or_path)
    check(config)
    return config


def read_config(name_or_path: str | Path) -> SchedulerConfig:
    """Like :func:`load_config` but only schema-checked: :func:`llmd_kserve.config.build.build_scheduler` runs the
    semantic checks once, keeping the validated plugin Params it builds from."""
    text, source = _read(name_or_path)
    return read_text(text, source)


def read_text(text: str, source: str = "", fmt: Literal["yaml", "json"] = "yaml") -> SchedulerConfig:
    """Config text (YAML, or JSON with ``fmt="json"``) -> schema-checked SchedulerConfig, as :func:`read_config`."""
    return _schema(parse_text(text, source, fmt), source)


def parse_text(text: str, source: str = "", fmt: Literal["yaml", "json"] = "yaml") -> Any:
    """YAML or JSON text -> the parsed document. ConfigError (at ``source[:line:col]``) when it does not parse, uses a
    YAML alias (``*name``, ``<<: *name``) or nests deeper than ``MAX_DEPTH``."""
    if fmt == "json":
        try:
            data = json.loads(text)
        except RecursionError:
            raise ConfigError(f"nested deeper than {MAX_DEPTH} levels", source) from None
        except ValueError as exc:
            raise ConfigError(f"invalid JSON: {exc}", source) from None
        _check_depth(data, source)
        return data
    try:
        _check_yaml_events(text, source)
        return yaml.load(text, Loader=_YamlLoader)  # noqa: S506 - a safe loader (C or Python SafeLoader)
    except yaml.YAMLError as e:
        raise ConfigError(f"invalid YAML: {getattr(e, 'problem', None) or e}", _where(source, e)) from None


def _where(source: str, at: Any) -> str:
    """``source:line:col`` of a YAML error or event."""
    mark = getattr(at, "problem_mark", None) or getattr(at, "start_mark", None)
    return f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source


def _check_yaml_events(text: str, source: str) -> None:
    """Refuse aliases and deep nesting from the event stream, before anything is built."""
    depth = 0
    for ev in yaml.parse(text, Loader=_YamlLoader):
        if isinstance(ev, yaml.AliasEvent):
            raise ConfigError("YAML aliases (*name) are not allowed in a config: write the value out",
                              _where(source, ev))
        if isinstance(ev, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise ConfigError(f"nested deeper than {MAX_DEPTH} levels", _where(source, ev))
        elif isinstance(ev, yaml.CollectionEndEvent):
            depth -= 1


def _check_depth(data: Any, source: str) -> None:
    """ConfigError when mappings and lists nest deeper than ``MAX_DEPTH`` (walked without recursion)."""
    stack = [(data, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, Mapping) else node if isinstance(node, list | tuple) else None
        if children is None:
            continue
        if depth > MAX_DEPTH:
            raise ConfigError(f"nested deeper than {MAX_DEPTH} levels", source)
        stack.extend((c, depth + 1) for c in children)


def parse_config(data: Any, source: str = "") -> SchedulerConfig:
    """Validate an already parsed config (a mapping, e.g. from YAML or a notebook)."""
    config = read_mapping(data, source)
    check(config)
    return config


def read_mapping(data: Any, source: str = "") -> SchedulerConfig:
    """Like :func:`parse_config` but only schema-checked, as :func:`read_config` is for files."""
    return _schema(data, source)


def validate_config(config: SchedulerConfig) -> None:
    """Semantic checks beyond the schema; see :func:`llmd_kserve.config.validate.check`."""
    check(config)


def _schema(data: Any, source: str) -> SchedulerConfig:
    if not isinstance(data, Mapping):
        raise ConfigError(f"a scheduler config must be a mapping, got {type(data).__name__}", source)
    _check_depth(data, source)
    for key, what in LLMD_EPP_SECTIONS.items():
        if key in data:
            raise ConfigError(f"llm-d's {key} is not read here: {what}; remove it", key)
    try:
        return SchedulerConfig.model_validate({**data, "source": source})
    except pydantic.ValidationError as e:
        raise config_error_from(e) from None


def _read(name_or_path: str | Path) -> tuple[str, str]:
    s = str(name_or_path)
    if s in shipped_configs():
        return resources.files("llmd_kserve.config").joinpath("shipped", f"{s}.yaml").read_text(), s
    path = Path(s)
    if path.is_file():
        return path.read_text(), s
    if path.suffix in (".yaml", ".yml", ".json") or "/" in s:
        raise ConfigError(f"no such config file: {s}")
    raise ConfigError(f"unknown config {s!r}: not a file, and shipped configs are {', '.join(shipped_configs())}")
