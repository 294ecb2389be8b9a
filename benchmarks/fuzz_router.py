"""The fault report's fuzz, repeated: hypothesis-generated requests (valid and not) against a real router + engine.

Counts answers by status and fails on any 5xx, any non-OpenAI-shaped error, or a router that stops answering
/health. Seeded (``--seed``), bounded by ``--examples``.

    PYTHONPATH=. .venv/bin/python benchmarks/fuzz_router.py [--examples 5000] [--seed 0]
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path

from hypothesis import HealthCheck, given, seed, settings

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.faults.fuzz_bodies import REQUEST  # noqa: E402
from tests.faults.procs import engine, request, router, running  # noqa: E402
from tests.faults.test_fuzz import assert_alive, check_answer  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    counts: collections.Counter[str] = collections.Counter()
    failures: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        eng = engine(Path(tmp), "e0", "--time-scale", "0")
        with running(eng):
            r = router(Path(tmp), eng.url, "--max-prompt-chars", "10000")
            with running(r):

                @seed(a.seed)
                @settings(max_examples=a.examples, deadline=None, database=None,
                          suppress_health_check=list(HealthCheck))
                @given(REQUEST)
                def fuzz(req: tuple[str, bytes]) -> None:
                    path, body = req
                    status, raw, headers = request(r.url + path, body, timeout=60)
                    counts[f"{path} {status}"] += 1
                    try:
                        check_answer(path, status, raw, headers)
                        assert_alive(r.url)
                    except AssertionError as exc:
                        failures.append(f"{path} {body[:200]!r}: {exc}")
                        raise

                t0 = time.monotonic()
                with contextlib.suppress(AssertionError):  # failures are collected and reported below
                    fuzz()
                elapsed = time.monotonic() - t0
                tracebacks = r.output().count("Traceback") + eng.output().count("Traceback")
    print(json.dumps({"requests": sum(counts.values()), "seconds": round(elapsed, 1), "by_status": dict(
        sorted(counts.items())), "failures": failures[:5], "tracebacks_logged": tracebacks}, indent=1))
    return 1 if failures or tracebacks else 0


if __name__ == "__main__":
    sys.exit(main())
