"""Loading and validating scheduler configs: shipped names or YAML files, errors with the path of the bad field."""

from __future__ import annotations

from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import pydantic
import yaml

from llmd_kserve.config.schema import SchedulerConfig
from llmd_kserve.errors import ConfigError

SHIPPED = ("default", "round-robin", "random", "load-only", "approx-prefix", "precise-prefix")
PD_SHIPPED = ("pd-predicted-ttft", "pd-always", "pd-uncached", "pd-never")
"""P/D configs (``pd-profile-handler``, profiles ``decode`` + ``prefill``), loadable by name like ``SHIPPED``."""


def shipped_configs() -> tuple[str, ...]:
    """Names of every config shipped in ``llmd_kserve/config/shipped/``: the single-profile ones (``SHIPPED``),
    then the P/D ones (``PD_SHIPPED``)."""
    return SHIPPED + PD_SHIPPED


def load_config(name_or_path: str | Path) -> SchedulerConfig:
    """A shipped config by name (``"precise-prefix"``) or a YAML file by path, parsed and fully validated
    (plugin types, parameters, references, weights). Raises ConfigError naming the bad field."""
    text, source = _read(name_or_path)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        raise ConfigError(f"invalid YAML: {getattr(e, 'problem', e)}", where) from None
    return parse_config(data, source)


def parse_config(data: Any, source: str = "") -> SchedulerConfig:
    """Validate an already parsed config (a mapping, e.g. from YAML or a notebook)."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"a scheduler config must be a mapping, got {type(data).__name__}", source)
    try:
        config = SchedulerConfig.model_validate({**data, "source": source})
    except pydantic.ValidationError as e:
        raise _config_error(e) from None
    validate_config(config)
    return config


def validate_config(config: SchedulerConfig) -> None:
    """Semantic checks beyond the schema; see :func:`llmd_kserve.config.validate.check`."""
    from llmd_kserve.config.validate import check

    check(config)


def error_path(loc: tuple[Any, ...], prefix: str = "") -> str:
    """``("plugins", 2, "parameters", "threshold")`` -> ``plugins[2].parameters.threshold``."""
    out = prefix
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _config_error(e: pydantic.ValidationError, prefix: str = "") -> ConfigError:
    err = e.errors()[0]
    more = f" (and {e.error_count() - 1} more)" if e.error_count() > 1 else ""
    return ConfigError(err["msg"] + more, error_path(tuple(err["loc"]), prefix))


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
