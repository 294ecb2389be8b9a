"""``stack.procs``: a stopped child's whole process group is gone when ``terminate`` returns, and a Ctrl-C that
comes while a child starts is raised only once the child is recorded."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest

from llmd_kserve.stack.procs import Proc, signals_held, spawn, terminate

# a child that starts a grandchild in its process group which ignores SIGTERM (as vLLM's resource tracker does)
PARENT = ("import subprocess, sys, time\n"
          "subprocess.Popen([sys.executable, '-c', 'import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
          "print(\"grandchild up\", flush=True); time.sleep(600)'])\n"
          "time.sleep(600)\n")


def _group_exists(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _wait_for_line(proc: Proc, text: str) -> None:
    for _ in range(600):
        if text in Path(proc.log.name).read_text():
            return
        time.sleep(0.05)
    raise AssertionError(f"{proc.name} never printed {text!r}: {proc.tail()}")


def test_terminate_returns_when_the_whole_group_is_gone(tmp_path: Path) -> None:
    proc = spawn("parent", [sys.executable, "-c", PARENT], tmp_path)
    try:
        _wait_for_line(proc, "grandchild up")
        terminate([proc], grace=5.0)
        assert proc.popen.returncode is not None
        assert not _group_exists(proc.popen.pid)  # the grandchild too: killed, and reaped by whoever adopted it
    finally:
        if _group_exists(proc.popen.pid):
            os.killpg(proc.popen.pid, signal.SIGKILL)


@pytest.fixture
def ctrl_c_raises():
    """SIGINT raises KeyboardInterrupt here, whatever the runner installed."""
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, old)


def test_a_ctrl_c_while_a_child_starts_is_raised_once_it_is_recorded(tmp_path: Path, ctrl_c_raises: None) -> None:
    recorded: list[Proc] = []
    try:
        with pytest.raises(KeyboardInterrupt), signals_held():
            os.kill(os.getpid(), signal.SIGINT)  # arrives while the child is being started
            recorded.append(spawn("child", [sys.executable, "-c", "import time; time.sleep(600)"], tmp_path))
            assert len(recorded) == 1
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        assert recorded[0].popen.poll() is None  # started, recorded, and so stoppable
    finally:
        terminate(recorded)
    assert not _group_exists(recorded[0].popen.pid)


def test_signals_are_held_once_and_not_swallowed(ctrl_c_raises: None) -> None:
    got: list[int] = []
    old = signal.signal(signal.SIGTERM, lambda signum, frame: got.append(signum))
    try:
        with signals_held():
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.01)
            assert got == []
        assert got == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, old)
