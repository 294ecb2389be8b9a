"""Loads the scheduler tests' shared helpers (``tests/scheduling/sched_fixtures.py``) as ``sched_fixtures``."""

import importlib.util
import sys
from pathlib import Path

if "sched_fixtures" not in sys.modules:
    _spec = importlib.util.spec_from_file_location(
        "sched_fixtures", Path(__file__).resolve().parents[1] / "scheduling" / "sched_fixtures.py"
    )
    sys.modules["sched_fixtures"] = _mod = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(_mod)

from sched_fixtures import index  # noqa: E402,F401  (fixture)
