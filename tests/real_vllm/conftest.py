"""Real vLLM servers (the CPU build) for the ``real_vllm`` tier, started once per session.

Fixtures:
    vllm_python     the interpreter with vLLM: env ``LLMD_VLLM_PYTHON``, else the nearest ``.venv-vllm``; every test
                    that needs it is skipped, with the install command, when there is none
    tiny_model_dir  the tiny random-weights Llama (``llmd_kserve.tiny_model``), written once into a temp dir
    vllm_up         ``llmd-kserve up --engine vllm --engines 2 --port 0 --no-prometheus`` on that model, as a
                    ``RealStack`` (router URL, engine URLs, the router's endpoint specs with their KV-event
                    addresses); stopped at the end of the session
    running_up(python, model_dir, work, *args)   the same with other ``up`` flags, for a module's own stack

Each test module marks itself ``pytestmark = [pytest.mark.real_vllm, pytest.mark.timeout(900)]``: a replica takes
about a minute to start on two busy cores, so tests share these replicas rather than start their own.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from llmd_kserve.vllm_env import VllmEnvMissing, find_vllm_env

ROOT = Path(__file__).resolve().parents[2]
STARTUP_S = 900.0


@dataclass(frozen=True)
class RealStack:
    """A running ``llmd-kserve up --engine vllm``: what its state file says, plus the model it serves."""

    router_url: str
    engine_urls: list[str]
    endpoints: list[str]
    """The router's endpoint specs: ``http://h:p#kv=tcp://h:p&replay=tcp://h:p``."""
    model: str
    model_dir: Path
    log_dir: Path
    pids: list[int]


@pytest.fixture(scope="session")
def vllm_python() -> Path:
    explicit = os.environ.get("LLMD_VLLM_PYTHON")
    try:
        return find_vllm_env(python=explicit or None, start=ROOT).python
    except VllmEnvMissing as exc:
        pytest.skip(f"real vLLM tier: {exc}")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("tokenizers", reason="the tiny model needs the 'hf' extra")
    from llmd_kserve.tiny_model import write_tiny_model

    return write_tiny_model(tmp_path_factory.mktemp("model") / "tiny-llama")


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "llmd_kserve.cli", *args]


def cli_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


@contextlib.contextmanager
def running_up(python: Path, model_dir: Path, work: Path, *args: str) -> Iterator[RealStack]:
    """``llmd-kserve up --engine vllm --port 0 --no-prometheus ARGS…`` until the block ends (SIGTERM, as Ctrl-C)."""
    state, logs = work / "state.json", work / "logs"
    out = (work / "up.out").open("wb")
    proc = subprocess.Popen(cli("up", "--engine", "vllm", "--port", "0", "--no-prometheus", "--model", str(model_dir),
                                "--vllm-python", str(python), "--state-file", str(state), "--log-dir", str(logs),
                                *args),
                            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=ROOT, env=cli_env())
    try:
        deadline = time.monotonic() + STARTUP_S
        while not state.exists():
            if proc.poll() is not None:
                pytest.fail(f"up --engine vllm exited {proc.returncode}: {(work / 'up.out').read_text()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"up --engine vllm not ready after {STARTUP_S:g} s; logs: {logs}")
            time.sleep(0.5)
        s = json.loads(state.read_text())
        yield RealStack(s["router_url"], s["engine_urls"], s["endpoints"], model_dir.name, model_dir, logs, s["pids"])
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        out.close()


@pytest.fixture(scope="session")
def vllm_up(vllm_python: Path, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealStack]:
    with running_up(vllm_python, tiny_model_dir, tmp_path_factory.mktemp("up"), "--engines", "2") as stack:
        yield stack


def post(url: str, body: dict[str, Any], timeout: float = 120.0) -> tuple[dict[str, Any], dict[str, str]]:
    """POST JSON; (the JSON answer, its headers). HTTP errors raise ``urllib.error.HTTPError``."""
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read()), dict(resp.headers)


def get(url: str, timeout: float = 30.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return resp.read().decode()
