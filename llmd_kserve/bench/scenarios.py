"""Routing scenarios (issue 15): workloads plus cluster shapes where simple prefix affinity is not enough.

Each ``Scenario`` is a value: a request builder (a rate and a seeded RNG give the requests with arrival times), the
cluster shape (engine count, per-engine latency profiles, KV blocks, how late KV events and scrapes are) and the
SLO and rate sweep it is judged by. The same requests drive the live stack (``bench.runner``) and the cluster
simulator (``benchmarks/routing_scenarios.py`` turns the shape into ``SimOptions``; bench sits below cluster_sim).

Why each exists (what a router must get right there):

- ``shared-prefix``   many groups x long system prompts, more prefix than one replica holds: affinity pays.
- ``zipf``            Zipf-skewed group popularity (s = 1.1, the top group 25% of the traffic) on a reduced KV
                      pool (4,000 blocks per replica: the 64 prefixes fill 75% of it): near saturation KV capacity,
                      not routing, sets the knee; a router must keep prefixes from thrashing each other.
- ``zipf-hot``        steeper skew (s = 1.4: the top group is 38% of the traffic, 1.5 replicas' share) on the
                      replicas' full KV: the hottest group needs more than one replica, so affinity must spill it
                      without piling it onto its first replica (TPOT) or scattering it (re-prefills).
- ``unequal``         mixed GPUs (2 x the fitted H100 profile, 2 x an A100-40GB profile *derived* from it by spec
                      ratios): the slow replicas hold 3.5x fewer blocks and prefill 3x slower.
- ``chat``            multi-turn sessions whose context grows every turn: the session's replica holds it all.
- ``burst``           new prefixes arriving in bursts of 8 within 20 ms, faster than KV events (a prefill of 4k
                      tokens takes ~0.1 s) and scrapes report them: the "burst affinity" problem.
- ``agentic``         32k-token agent prefixes with short turns (a 128k-context variant of the H100 profile).
- ``llmd-shared-prefix`` llm-d's own benchmark shape (inference-perf shared_prefix: 6,000-token system prompts,
                      1,200-token questions, 1,000 output tokens), 64 groups on 4 replicas, run at a ramp of Poisson
                      rates; each run lasts 30 virtual s of arrivals (a request decodes for ~25 s), so the decode
                      batches reach their steady state.
- ``rag-reasoning``   RAG (long in, short out) mixed with reasoning (short in, long out) on one pool.
- ``rag-reasoning-pd`` the same requests on a P/D cluster (2 prefill + 2 decode engines), judged over the P/D
                      configs (``pd-never`` is its cache-blind-to-the-topology baseline): long RAG prefills on the
                      decode engines stall the reasoning decodes there, prefilling them remotely moves KV instead.

In the simulator every prompt reaches the scheduler as token ids (the engine's tokenization is modelled by the
profile's front-end overhead); live, ``text_prompts`` chooses text or token-id prompts.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, replace

from llmd_kserve.bench.workloads import (
    ArrivalSpec,
    ChatSpec,
    RagSpec,
    ReasoningSpec,
    RequestSpec,
    SharedPrefixSpec,
    build_requests,
    make_workload,
    synth_text,
)
from llmd_kserve.types import Role

Builder = Callable[[float, random.Random, int], list[RequestSpec]]


@dataclass(frozen=True, slots=True)
class Scenario:
    """One routing scenario: requests at a rate, the cluster they run on, and how they are judged."""

    name: str
    why: str
    build: Builder
    """``build(rate, rng, num_requests)`` -> requests in send order with ``arrival_s`` set."""
    rates: tuple[float, ...]
    """The sweep (req/s) for the max rate within the SLO."""
    matched_rate: float
    """The equal load (req/s) at which percentiles are compared: below the cache-blind policy's saturation."""
    engines: int = 4
    engine_profiles: tuple[str, ...] | None = None
    num_blocks: int | None = None
    max_model_len: int | None = None
    """Override of the profile's context limit (long-context scenarios)."""
    kv_event_delay: float = 0.001
    slo_ttft_s: float = 1.0
    slo_tpot_s: float = 0.05
    num_requests: int = 400
    min_duration_s: float = 8.0
    """Runs last at least this long (virtual seconds): ``max(num_requests, rate * min_duration_s)`` requests."""
    roles: tuple[Role, ...] | None = None
    """Engine roles (P/D); None: ``engines`` aggregated replicas."""
    configs: tuple[str, ...] | None = None
    """The scheduler configs this scenario is judged over (None: the benchmark's aggregated set)."""
    baseline: str = "round-robin"
    """The config whose max rate within the SLO sets the matched rate."""
    sessions: bool = False
    """Session workload (chat, agentic): more requests means more concurrent sessions, i.e. another workload, so
    every run (the matched one too) keeps ``max(num_requests, rate * min_duration_s)`` requests."""


def _poisson(spec: object) -> Builder:
    def build(rate: float, rng: random.Random, n: int) -> list[RequestSpec]:
        return make_workload(spec, ArrivalSpec(pattern="poisson", rate=rate), rng, n)  # type: ignore[arg-type]
    return build


def _bursts(group_len: int, burst: int, window_s: float, question_len: int, output_len: int) -> Builder:
    """Fresh prefixes arriving in bursts: bursts start at Poisson times (``rate / burst`` per second), each brings
    a new ``group_len``-token prefix and ``burst`` requests on it within ``window_s``."""
    def build(rate: float, rng: random.Random, n: int) -> list[RequestSpec]:
        out: list[RequestSpec] = []
        t = 0.0
        for b in range(-(-n // burst)):
            prefix = synth_text(rng, group_len)
            for q in range(burst):
                prompt = prefix + synth_text(rng, question_len, continuation=True)
                out.append(RequestSpec(f"burst{b}-q{q}", t + rng.uniform(0, window_s), prompt, output_len,
                                       group_len + question_len, group=f"b{b}"))
            t += rng.expovariate(rate / burst)
        out.sort(key=lambda r: r.arrival_s or 0.0)
        return out[:n]
    return build


def _mixed(rag: RagSpec, reasoning: ReasoningSpec, rag_share: float) -> Builder:
    def build(rate: float, rng: random.Random, n: int) -> list[RequestSpec]:
        n_rag = round(n * rag_share)
        reqs = build_requests(rag, rng, n_rag) + build_requests(reasoning, rng, n - n_rag)
        rng.shuffle(reqs)
        t, out = 0.0, []
        for r in reqs:
            out.append(replace(r, arrival_s=t))
            t += rng.expovariate(rate)
        return out
    return build


SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    Scenario("shared-prefix", "32 equally popular groups x 3,000-token prefixes; each replica holds ~half of them",
             _poisson(SharedPrefixSpec(num_groups=32, system_prompt_len=3000, question_len=128, output_len=64)),
             rates=(20, 40, 60, 80, 100, 120, 140, 160), matched_rate=40, num_blocks=3000),
    Scenario("zipf", "64 groups x 3,000 tokens, Zipf s=1.1 popularity (top group 25%), 4,000 KV blocks per replica",
             _poisson(SharedPrefixSpec(num_groups=64, system_prompt_len=3000, question_len=128, output_len=64,
                                       zipf_s=1.1)),
             rates=(40, 60, 80, 100, 120, 160, 200, 210, 220, 230, 240, 250, 260), matched_rate=60, num_blocks=4000),
    Scenario("zipf-hot", "64 groups x 3,000 tokens, Zipf s=1.4 popularity: the top group is 38%, 1.5 replicas' share",
             _poisson(SharedPrefixSpec(num_groups=64, system_prompt_len=3000, question_len=128, output_len=64,
                                       zipf_s=1.4)),
             rates=(40, 80, 120, 160, 180, 190, 200, 210, 220, 230, 240, 250, 260, 270, 280, 300), matched_rate=120),
    Scenario("unequal", "2 x H100 (fitted) + 2 x A100-40GB (derived, 3.5x fewer blocks, ~3x slower prefill)",
             _poisson(SharedPrefixSpec(num_groups=48, system_prompt_len=3000, question_len=128, output_len=64)),
             rates=(10, 20, 30, 40, 60, 80, 100, 110, 120, 140, 160, 180, 200, 220), matched_rate=15,
             engine_profiles=("h100-llama8b", "h100-llama8b", "a100-40g-llama8b-derived", "a100-40g-llama8b-derived")),
    Scenario("chat", "64 sessions x 6 turns, 1,000-token system prompt, +350 tokens of context per turn",
             _poisson(ChatSpec(num_sessions=64, turns_per_session=6, system_prompt_len=1000, user_len=200,
                               output_len=150)),
             rates=(10, 20, 30, 40, 50, 60, 80), matched_rate=20, num_blocks=3000, sessions=True),
    Scenario("burst", "bursts of 8 requests on a fresh 4,000-token prefix within 20 ms (faster than KV events)",
             _bursts(4000, 8, 0.02, 128, 64), rates=(20, 40, 60, 80, 100, 120, 140), matched_rate=40),
    Scenario("agentic", "16 agent sessions x 4 short turns on 32k-token prefixes (128k-context profile)",
             _poisson(ChatSpec(num_sessions=16, turns_per_session=4, system_prompt_len=32000, user_len=100,
                               output_len=50)),
             rates=(1, 2, 3, 4, 6, 8), matched_rate=2, max_model_len=131072, slo_ttft_s=3.0, sessions=True),
    Scenario("llmd-shared-prefix", "llm-d's shared-prefix shape: 64 groups x 6,000-token prompts, 1,200-token "
             "questions, 1,000 output tokens",
             _poisson(SharedPrefixSpec(num_groups=64, system_prompt_len=6000, question_len=1200, output_len=1000)),
             rates=(8, 12, 16, 24, 32, 40), matched_rate=12, min_duration_s=30),
    Scenario("rag-reasoning", "RAG (4-7 of 32 docs x 1,024 tokens, 64 out) mixed 3:1 with reasoning (1-2k out)",
             _mixed(RagSpec(num_requests=1, num_documents=32, document_len=1024, system_prompt_len=256),
                    ReasoningSpec(num_requests=1, output_len_min=1000, output_len_max=2000), 0.75),
             rates=(4, 8, 16, 24, 32, 48), matched_rate=8, num_blocks=8000),
    Scenario("rag-reasoning-pd", "rag-reasoning on 2 prefill + 2 decode engines, over the P/D configs",
             _mixed(RagSpec(num_requests=1, num_documents=32, document_len=1024, system_prompt_len=256),
                    ReasoningSpec(num_requests=1, output_len_min=1000, output_len_max=2000), 0.75),
             rates=(4, 8, 12, 16, 24, 32), matched_rate=8, num_blocks=8000,
             roles=("prefill", "prefill", "decode", "decode"),
             configs=("pd-never", "pd-always", "pd-uncached", "pd-predicted-ttft"), baseline="pd-never"),
)}
