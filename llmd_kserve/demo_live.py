"""The demo's live phase: every policy over HTTP on one local stack of simulated engine processes or real vLLM
replicas (``llmd-kserve demo [--engine vllm]``), the router restarted and the engines' prefix caches reset per policy.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import Callable, Sequence
from typing import Any

from rich.console import Console

from llmd_kserve.bench.report import run_entry_from
from llmd_kserve.bench.stats import SLO
from llmd_kserve.defaults import DEFAULT_PROFILE
from llmd_kserve.demo_plan import SLO_DEMO, Scale, print_progress, requests_for


def run_live(scale: Scale, policies: Sequence[str], seed: int = 0, slo: SLO = SLO_DEMO,
             console: Console | None = None, vllm_python: str | None = None,
             observe: Callable[[Any, str], None] | None = None,
             profile: str = DEFAULT_PROFILE) -> list[dict[str, Any]]:
    """Every policy live: one LocalStack (engines stay up), the router restarted per policy, caches reset.
    ``scale.engine == "vllm"``: real vLLM replicas of the tiny model (``vllm_python``: the interpreter with vLLM;
    default the nearest ``.venv-vllm``), the router keying prompts with the model's tokenizer. ``observe(stack,
    phase)`` is called once the stack is up (``"started"``), after each policy's run (the policy's name, while its
    router still runs) and at the end (``"done"``). ``profile``: the simulated engines' latency profile and the
    router's latency model."""
    from llmd_kserve.bench.loadgen import LoadConfig, run_load
    from llmd_kserve.stack import LocalStack

    arrival, reqs = requests_for(scale, seed)
    runs: list[dict[str, Any]] = []
    with LocalStack(**stack_options(scale, policies[0], seed, vllm_python, profile)) as stack:
        if observe is not None:
            observe(stack, "started")
        if scale.engine == "vllm":
            _warm_up(stack.engine_base_urls)
        for i, policy in enumerate(policies):
            if i:
                stack.restart_router(policy)
            for url in stack.engine_base_urls:  # every policy starts from cold caches
                _post(f"{url}/reset_prefix_cache", None)
            t0 = time.perf_counter()
            config = LoadConfig(target=stack.router_url, engine_urls=stack.engine_base_urls, progress=False)
            result = asyncio.run(run_load(reqs, arrival, config, run_tag=f"{policy}-"))
            runs.append(dict(run_entry_from(result, policy, slo, scale="live", engines=scale.engines),
                             engine=scale.engine))
            print_progress(console, runs[-1], time.perf_counter() - t0)
            if observe is not None:
                observe(stack, policy)
        if observe is not None:
            observe(stack, "done")
    return runs


def stack_options(scale: Scale, config: str, seed: int, vllm_python: str | None,
                  profile: str = DEFAULT_PROFILE) -> dict[str, Any]:
    """LocalStack options for the live phase."""
    options: dict[str, Any] = {"engines": scale.engines, "config": config, "prometheus": False, "seed": seed,
                               "profile": profile}
    if scale.engine == "vllm":
        from llmd_kserve.tiny_model import ensure_tiny_model

        model = str(ensure_tiny_model())
        return options | {"engine": "vllm", "model": model, "kv_cache_tokens": scale.kv_cache_tokens,
                          "vllm_python": vllm_python, "router_args": ("--tokenizer", model)}
    return options | {"engine_args": ("--num-blocks", str(scale.num_blocks)) if scale.num_blocks else ()}


def _post(url: str, body: dict[str, Any] | None) -> bytes:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="POST", headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as resp:
        return bytes(resp.read())


def _warm_up(engine_urls: Sequence[str]) -> None:
    """One short completion per replica, so no policy pays the engine's first-request costs."""
    for url in engine_urls:
        with urllib.request.urlopen(f"{url}/v1/models", timeout=30) as resp:
            model = json.loads(resp.read())["data"][0]["id"]
        _post(f"{url}/v1/completions", {"model": model, "prompt": "warm up " * 200, "max_tokens": 8})
