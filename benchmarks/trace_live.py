"""Live trace replays for ``trace_replay.py --live N``: a fresh local stack (N simulated engines in real time and
our router under one config) per run, or the same engines behind vLLM's router (``vllm-router`` or
``vllm-router:POLICY`` as the config name)."""

from __future__ import annotations

import random
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from llmd_kserve.bench.report import run_entry_from
from llmd_kserve.bench.stats import SLO
from llmd_kserve.bench.workloads import ArrivalSpec, TraceSpec, build_requests
from llmd_kserve.errors import ConfigError

PEER = "vllm-router"
PEER_DEFAULT_POLICY = "cache_aware"


def peer_policy(config: str) -> str | None:
    """The vllm-router policy a config name asks for (``vllm-router`` = its cache-aware policy), else None."""
    name, _, policy = config.partition(":")
    return (policy or PEER_DEFAULT_POLICY) if name == PEER else None


def find_peer(path: str | None) -> str:
    """The vllm-router executable: ``path``, else the one on PATH; a one-line error when there is none."""
    exe = path or shutil.which(PEER)
    if not exe or not Path(exe).is_file():
        raise ConfigError("vllm-router not found: install it (pip install vllm-router) or pass --vllm-router PATH",
                          "vllm-router")
    return exe


@contextmanager
def _peer(exe: str, policy: str, engines: list[str]) -> Iterator[str]:
    """vllm-router with ``policy`` in front of ``engines``, up and answering; its URL."""
    import urllib.request

    from llmd_kserve.stack.procs import free_port

    port, prom = free_port(), free_port()
    proc = subprocess.Popen([exe, "--host", "127.0.0.1", "--port", str(port), "--policy", policy,
                             "--prometheus-host", "127.0.0.1", "--prometheus-port", str(prom), "--log-level",
                             "warning", "--worker-urls", *engines], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                err = (proc.stderr.read() if proc.stderr else b"").decode(errors="replace").strip().splitlines()
                raise ConfigError(f"vllm-router exited: {err[-1] if err else proc.returncode}", "vllm-router")
            try:
                with urllib.request.urlopen(f"{url}/v1/models", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise ConfigError("vllm-router did not answer within 60 s", "vllm-router")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def run_live_stack(spec: TraceSpec, config: str, engines: int, seed: int, timeout: float, slo: SLO,
                   vllm_router: str | None = None, progress: bool = True, prefill: int = 0,
                   decode: int = 0) -> dict[str, Any]:
    """One replay of ``spec`` on a fresh local stack of ``engines`` simulated engines (cold caches) under
    ``config``; a ``vllm-router[:POLICY]`` config puts vLLM's router in front of the engines instead of ours.
    ``prefill``/``decode`` > 0 start that many prefill and decode engines instead (a P/D cluster)."""
    from llmd_kserve.aio import run
    from llmd_kserve.bench.loadgen import LoadConfig, run_load
    from llmd_kserve.stack import LocalStack

    policy = peer_policy(config)
    exe = find_peer(vllm_router) if policy else None
    arrival = ArrivalSpec(pattern="trace")
    requests = build_requests(spec, random.Random(seed))
    ours = "round-robin" if policy else config  # with the peer in front, our router idles
    with ExitStack() as held:
        stack = held.enter_context(LocalStack(engines=engines, prefill=prefill, decode=decode, config=ours,
                                              prometheus=False, seed=seed))
        url = held.enter_context(_peer(exe, policy, stack.engine_base_urls)) if exe and policy else stack.router_url
        load = LoadConfig(target=url, timeout_s=timeout, engine_urls=stack.engine_base_urls, progress=progress)
        result = run(run_load(requests, arrival, load))
    return run_entry_from(result, config, slo, scale="live", engines=engines)
