"""Makes ``tests/browser/lab.py`` importable as ``lab`` (the browser tests' helpers)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
