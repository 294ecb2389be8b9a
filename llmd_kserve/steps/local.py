"""A detached local stack for pipelines: ``llmd-kserve up`` started in its own session, found again by a state file.

A pipeline's steps run in separate processes, so the stack that ``deploy(target="local")`` starts must outlive the
step: it runs as ``llmd-kserve up --state-file F`` (its own session, output to a log file, not tied to the step),
and ``wait_ready`` / ``benchmark`` / ``teardown`` find its URLs and pids in ``F``. ``stop`` sends the ``up``
process SIGTERM, which stops its engines and router; SIGKILL after a grace period.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llmd_kserve.errors import LlmdError
from llmd_kserve.stack import free_port

log = logging.getLogger(__name__)


def state_path(state_dir: str, run_id: str) -> Path:
    """Where the stack of pipeline run ``run_id`` keeps its state (``state_dir`` "": the temp directory)."""
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in run_id) or "default"
    return Path(state_dir or tempfile.gettempdir()) / f"llmd-stack-{safe}.json"


def start(state: Path, *, engines: int = 2, prefill: int = 0, decode: int = 0, config: str = "default",
          num_blocks: int | None = None, time_scale: float = 1.0, seed: int = 0, timeout: float = 90.0) -> dict:
    """Start a detached stack and wait until it wrote ``state``; returns that state plus ``supervisor_pid``."""
    if state.exists():
        raise LlmdError(f"a local stack is already running for this run (state file {state}); tear it down first")
    state.parent.mkdir(parents=True, exist_ok=True)
    log_path = state.with_suffix(".log")
    argv: list[str] = [sys.executable, "-m", "llmd_kserve.cli", "up", "--port", str(free_port()),
                       "--no-prometheus", "--config", config, "--time-scale", str(time_scale), "--seed", str(seed),
                       "--state-file", str(state), "--log-dir", str(state.with_suffix(".d"))]
    argv += ["--prefill", str(prefill), "--decode", str(decode)] if prefill else ["--engines", str(engines)]
    if num_blocks:
        argv.append(f"--engine-arg=--num-blocks={num_blocks}")
    with open(log_path, "ab") as logf:
        proc = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    deadline = time.monotonic() + timeout
    while not state.exists():
        if proc.poll() is not None:
            raise LlmdError(f"the local stack exited with code {proc.returncode}: {_tail(log_path)}")
        if time.monotonic() > deadline:
            _kill_group(proc.pid)
            raise LlmdError(f"the local stack did not come up within {timeout:g}s: {_tail(log_path)}")
        time.sleep(0.2)
    return read(state) | {"supervisor_pid": proc.pid}


def read(state: Path) -> dict[str, Any]:
    return json.loads(state.read_text())


def alive(pids: Sequence[int]) -> list[int]:
    """The pids among ``pids`` that still run (zombies count as gone)."""
    out = []
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, 0)
                out.append(pid)
            continue
        if stat.rsplit(")", 1)[1].split()[0] != "Z":
            out.append(pid)
    return out


def stop(state: Path, grace: float = 15.0) -> list[int]:
    """Stop the stack whose state is in ``state`` (SIGTERM to its supervisor, then SIGKILL); returns the pids that
    were stopped. No state file: nothing was started (or it is already gone), returns []."""
    if not state.exists():
        return []
    pids = [int(p) for p in read(state).get("pids", [])]
    if pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pids[0], signal.SIGTERM)
    deadline = time.monotonic() + grace
    while alive(pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in alive(pids):
        _kill_group(pid)
    state.unlink(missing_ok=True)
    return pids


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _tail(path: Path, n: int = 3) -> str:
    with contextlib.suppress(OSError):
        lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
        return " | ".join(lines[-n:]) or "(no output)"
    return "(no log)"
