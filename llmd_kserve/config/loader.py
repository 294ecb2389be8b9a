"""Loading and validating scheduler configs: shipped names or YAML files, errors with the path of the bad field."""

from __future__ import annotations

from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import pydantic
import yaml

from llmd_kserve.config.schema import SchedulerConfig
from llmd_kserve.config.validate import check
from llmd_kserve.defaults import PD_SHIPPED_CONFIGS, SHIPPED_CONFIGS
from llmd_kserve.errors import ConfigError, config_error_from, error_path  # noqa: F401  (error_path: re-export)

SHIPPED = SHIPPED_CONFIGS
PD_SHIPPED = PD_SHIPPED_CONFIGS


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
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        raise ConfigError(f"invalid YAML: {getattr(e, 'problem', e)}", where) from None
    return _schema(data, source)


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
