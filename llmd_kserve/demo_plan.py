"""The demo's plan: its policies, the simulated and live scales (simulated engines or real vLLM replicas), the
requests of a scale, and the progress line of one run."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from rich.console import Console

from llmd_kserve.bench.stats import SLO
from llmd_kserve.bench.workloads import ArrivalSpec, RequestSpec, SharedPrefixSpec, make_workload
from llmd_kserve.errors import ConfigError

POLICIES = ("round-robin", "load-only", "approx-prefix", "precise-prefix", "llm-d-optimized-baseline", "default")
VLLM_POLICIES = ("round-robin", "approx-prefix", "precise-prefix", "default")
"""The live phase on real vLLM runs these unless policies are given (each run takes about a minute on 2 cores)."""
POLICY_WIDTH = max(len(p) for p in POLICIES)
"""Width of the policy column in progress lines."""
ENGINES = ("sim", "vllm")
ENGINE_LABEL = {"sim": "simulated", "vllm": "vLLM 0.32 CPU"}
VLLM_KV_CACHE_TOKENS = 16384
"""KV cache per vLLM replica in the demo: 512 blocks of 32, about 7 of the workload's 12 prefixes."""
VLLM_LIVE_LOAD = (144, 3.0)
"""Requests and Poisson rate (req/s) of the live phase on real vLLM: about 50 s per policy."""
SLO_DEMO = SLO(ttft=0.5, tpot=0.05)
"""Interactive-chat objectives: first token within 0.5 s, then at least 20 tokens/s."""


@dataclass(frozen=True, slots=True)
class Scale:
    """One side of the demo: where it runs, how many engines, the workload and its offered load."""

    name: str  # "sim" | "live"
    engines: int
    num_blocks: int | None
    workload: SharedPrefixSpec
    num_requests: int
    rate: float
    engine: str = "sim"
    """``sim``: simulated engines (in the cluster simulator, or as processes); ``vllm``: real vLLM replicas."""
    kv_cache_tokens: int | None = None
    """``vllm``: KV cache per replica, in the model's tokens."""

    def info(self) -> dict[str, Any]:
        kv: dict[str, Any] = ({"kv_cache_tokens": self.kv_cache_tokens} if self.engine == "vllm"
                              else {"num_blocks": self.num_blocks or "profile (26962)"})
        return {"engine": self.engine, "engines": self.engines, **kv, "workload": self.workload.model_dump(),
                "num_requests": self.num_requests, "arrivals": {"pattern": "poisson", "rate": self.rate}}


def _spec(groups: int, n: int, system: int = 6000, question: int = 200, output: int = 128) -> SharedPrefixSpec:
    return SharedPrefixSpec(num_groups=groups, prompts_per_group=-(-n // groups), system_prompt_len=system,
                            question_len=question, output_len=output)


def plan(quick: bool = False, engine: str = "sim") -> tuple[Scale, Scale]:
    """The sim and live scales. Each offered load is 10-25% above what round-robin sustains in that setup (8 engines:
    ~50 req/s; 4 engines with 4,096 blocks: ~18 req/s) and well below what the default sustains (~90 / ~35 req/s).

    ``engine="vllm"``: the live scale is 2 real vLLM replicas on the tiny model, 12 prefixes of 1,000 words (about
    25,000 of its tokens: more than one replica's 16,384-token cache, less than both), 32 output tokens."""
    if engine not in ENGINES:
        raise ConfigError(f"must be one of {', '.join(ENGINES)}, got {engine!r}", "engine")
    sim = (Scale("sim", 8, 8192, _spec(64, 1000), 1000, 55.0) if quick
           else Scale("sim", 8, None, _spec(192, 4000), 4000, 55.0))
    if engine == "vllm":
        return sim, vllm_live_scale(*((48, 3.0) if quick else VLLM_LIVE_LOAD))
    if quick:
        return sim, Scale("live", 2, 4096, _spec(16, 120), 120, 10.0)
    return sim, Scale("live", 4, 4096, _spec(28, 396), 396, 22.0)


def requests_for(scale: Scale, seed: int) -> tuple[ArrivalSpec, list[RequestSpec]]:
    """The arrival spec and the requests of ``scale`` (the same for every policy)."""
    arrival = ArrivalSpec(pattern="poisson", rate=scale.rate)
    return arrival, make_workload(scale.workload, arrival, random.Random(seed), scale.num_requests)


def vllm_live_scale(num_requests: int, rate: float) -> Scale:
    """The live scale on real vLLM at another load (:func:`plan` uses :data:`VLLM_LIVE_LOAD`)."""
    return Scale("live", 2, None, _spec(12, num_requests, system=1000, question=50, output=32), num_requests, rate,
                 "vllm", VLLM_KV_CACHE_TOKENS)


def print_progress(console: Console | None, run: dict[str, Any], took: float) -> None:
    if console is not None:
        s = run["summary"]
        console.print(f"  {run['scale']:4s} {run['policy']:{POLICY_WIDTH}s} {s['n']} requests, TTFT p90 {_fmt_ms(s['ttft_p90'])} ms, "
                      f"hit rate {_fmt_pct(s['cache_hit_rate'])} ({took:.1f}s)")


def _fmt_ms(v: float | None) -> str:
    return "–" if v is None else f"{v * 1000:.1f}"


def _fmt_pct(v: float | None) -> str:
    return "–" if v is None else f"{v * 100:.1f}%"
