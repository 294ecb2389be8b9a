"""Argument types and checks shared by the subcommands (each a one-line error through ``ConfigError``)."""

from __future__ import annotations

import argparse
import os

from llmd_kserve.defaults import (
    PD_SHIPPED_CONFIGS,
    SHIPPED_CONFIGS,
)
from llmd_kserve.errors import ConfigError


def csv_list(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def port_number(value: str) -> int:
    port = int(value)
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"must be 0..65535 (0: any free port), got {value}")
    return port


def positive_int(value: str) -> int:
    n = int(value)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return n


def positive_float(value: str) -> float:
    x = float(value)
    if not x > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return x


def non_negative_float(value: str) -> float:
    x = float(value)
    if not x >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return x


def rates(value: str) -> list[float]:
    try:
        rates = [float(x) for x in csv_list(value)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected rates like 1,2.5,4, got {value!r}") from None
    if not rates or any(r <= 0 for r in rates):
        raise argparse.ArgumentTypeError(f"rates must be > 0, got {value!r}")
    return rates


def shipped_names() -> str:
    return ", ".join(SHIPPED_CONFIGS + PD_SHIPPED_CONFIGS)


def check_output(path: str | None, flag: str) -> None:
    """Fail before the work starts when an output file could not be written afterwards."""
    if not path:
        return
    parent = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise ConfigError(f"is a directory, expected a file path: {path}", flag)
    if not os.path.isdir(parent):
        raise ConfigError(f"directory does not exist: {parent}", flag)
    if not os.access(parent, os.W_OK):
        raise ConfigError(f"directory is not writable: {parent}", flag)
