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
about a minute to start on two busy cores, so tests share these replicas rather than start their own. Tests that
need a router of their own put an in-process ``running_router`` (``router_over``) in front of the shared replicas.
A module that starts replicas of its own says ``OWN_STACK = True``: those modules run first, each stack stopped
before the next starts, so that no more than two replicas run at once.

Helpers for tests with their own router: ``wait_live`` (the router's KV-event subscriptions and scrapes are live),
``wait_for`` (poll a condition), ``token_ids`` (a random token-id prompt), ``held_blocks`` (leading blocks of a
prompt the router's index says an endpoint holds), ``counter`` (a Prometheus counter's value in a page).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from llmd_kserve.vllm_env import VllmEnvMissing, find_vllm_env

ROOT = Path(__file__).resolve().parents[2]
STARTUP_S = 900.0
BLOCK = 32
"""The replicas' KV block size (vLLM's CPU attention backend)."""
HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """This directory's modules with ``OWN_STACK = True`` first (in file order), then those sharing ``vllm_up``: the
    session stack starts after the modules' own stacks have stopped."""
    slots = [i for i, item in enumerate(items) if Path(str(item.fspath)).parent == HERE]
    mine = [items[i] for i in slots]
    mine.sort(key=lambda item: not getattr(getattr(item, "module", None), "OWN_STACK", False))
    for i, item in zip(slots, mine, strict=True):
        items[i] = item


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


# --- an in-process router in front of real replicas -----------------------------------------------------------------

@contextlib.asynccontextmanager
async def router_over(endpoints: Sequence[str], model_dir: Path, **settings: Any) -> AsyncIterator[Any]:
    """``running_router`` over these endpoint specs, tokenizing with the model's own tokenizer, live (see
    ``wait_live``) before it is yielded."""
    from llmd_kserve.router.app import running_router

    # A first token can take over the default 10 s stall floor when the CPU replicas share a loaded machine; a test
    # about something else must not see its request moved by stall detection (the stall tests set their own floor).
    settings.setdefault("stall_floor_s", 60.0)
    async with running_router(endpoints=list(endpoints), tokenizer=str(model_dir), **settings) as router:
        await wait_live(router.state, [e.split("#")[0] for e in endpoints], model_dir.name)
        yield router


async def wait_live(state: Any, engine_urls: Sequence[str], model: str, timeout: float = 120.0) -> None:
    """Until every engine's KV events reach the router (ZMQ's SUB socket misses what is published before it has
    connected, so each engine is poked with a one-block prompt until a message arrives) and its metrics are fresh."""
    import aiohttp

    rng = random.Random()
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while True:
            stats = state.subscriber.stats()
            quiet = [u for u in engine_urls if u not in stats or stats[u].messages == 0]
            stale = [s.id for s in state.endpoint_states() if s.metrics.stale]
            if not quiet and not stale:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"router not live after {timeout:g} s: no KV events from {quiet}, stale {stale}")
            for url in quiet:
                body = {"model": model, "prompt": token_ids(BLOCK + 1, rng), "max_tokens": 1}
                async with session.post(f"{url}/v1/completions", json=body) as r:
                    assert r.status == 200, await r.text()
            await asyncio.sleep(0.2)


async def wait_for(check: Callable[[], Awaitable[bool] | bool], what: str, timeout: float = 60.0) -> None:
    """Poll ``check`` (sync or async) every 0.1 s until it is true; AssertionError naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        ok = check()
        if not isinstance(ok, bool):
            ok = await ok
        if ok:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g} s: {what}")
        await asyncio.sleep(0.1)


def token_ids(n: int, rng: random.Random) -> list[int]:
    """A prompt of ``n`` random token ids (the tiny model's vocabulary, special tokens 0-2 left out)."""
    return [rng.randrange(3, 8192) for _ in range(n)]


def held_blocks(state: Any, endpoint: str, ids: Sequence[int]) -> int:
    """How many leading full blocks of ``ids`` the router's KV index says ``endpoint`` holds."""
    from llmd_kserve.kvcache.hashing import block_keys

    held: int = state.index.match(block_keys(ids, BLOCK, state.index.seed), [endpoint]).get(endpoint, 0)
    return held


def counter(page: str, name: str, **labels: str) -> float:
    """The sum of a metric's samples in a Prometheus text page whose labels include ``labels``."""
    total = 0.0
    for line in page.splitlines():
        m = re.match(rf"^{re.escape(name)}(?:\{{([^}}]*)\}})? (\S+)$", line)
        if m and all(f'{k}="{v}"' in (m.group(1) or "") for k, v in labels.items()):
            total += float(m.group(2))
    return total
