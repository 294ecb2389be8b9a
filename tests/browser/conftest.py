"""Makes ``tests/browser/browser_lab.py`` importable as ``browser_lab`` (the browser tests' helpers)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
