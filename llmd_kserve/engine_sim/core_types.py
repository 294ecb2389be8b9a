"""The engine core's data: a request's scheduling state, one step's output, the counters, the block-hash chain."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from llmd_kserve.kvcache.events import KVEvent

MASK = (1 << 64) - 1
VOCAB = 32000
FIRST_ID = 3
"""Output token ids are in ``[FIRST_ID, VOCAB)``."""


@dataclass(frozen=True, slots=True)
class StepOutput:
    """One engine step: what ran, how long it took, and what each request got (valid at ``now + duration``)."""

    now: float
    duration: float
    new_tokens: dict[str, int]
    """request id -> the token it produced this step."""
    first_token: tuple[str, ...] = ()
    """Requests whose first output token is in ``new_tokens``."""
    finished: dict[str, str] = field(default_factory=dict)
    """request id -> finish reason (``length`` | ``stop``)."""
    scheduled_first: tuple[str, ...] = ()
    """Requests scheduled for the first time this step (their queue time ends at ``now``)."""
    cached_tokens: dict[str, int] = field(default_factory=dict)
    """For ``scheduled_first`` requests: prompt tokens served from the prefix cache."""
    preempted: tuple[str, ...] = ()
    num_prefill_tokens: int = 0
    num_decode_seqs: int = 0
    kv_events: tuple[KVEvent, ...] = ()

    @property
    def end(self) -> float:
        return self.now + self.duration


@dataclass(slots=True)
class EngineStats:
    """Monotonic counters for ``/metrics`` (vLLM names in comments), counted as the core's ``vllm_version`` does.

    ``prefix_queries``/``prefix_hits`` add a waiting request's length and hit at every lookup (0.26: every step it is
    tried, even when it then does not fit) or once, when it is admitted (0.32), except for requests re-queued by
    preemption, whose lookups vLLM keeps out of the exported counters; ``prompt_tokens`` adds a request's whole prompt
    once, with its first token.
    """

    prefix_queries: int = 0  # vllm:prefix_cache_queries_total (tokens, never-preempted requests)
    prefix_hits: int = 0  # vllm:prefix_cache_hits_total (tokens)
    num_preemptions: int = 0  # vllm:num_preemptions_total
    prompt_tokens: int = 0  # vllm:prompt_tokens_total (whole prompts, cached or not, counted at the first token)
    prompt_tokens_computed: int = 0  # vllm:prompt_tokens_by_source_total{source="local_compute"}
    prompt_tokens_local_hit: int = 0  # ...{source="local_cache_hit"}
    prompt_tokens_external: int = 0  # ...{source="external_kv_transfer"}
    prefill_tokens_run: int = 0  # prompt tokens the steps actually computed (re-prefills after preemption included)
    generation_tokens: int = 0  # vllm:generation_tokens_total
    num_steps: int = 0
    busy_time: float = 0.0


def extend_hashes(hashes: list[int], token_ids: Sequence[int], block_size: int, seed: int, upto: int) -> None:
    """Extend the chain of 64-bit hashes over full blocks of ``token_ids`` until it covers ``upto`` blocks."""
    parent = hashes[-1] if hashes else 0
    for j in range(len(hashes), upto):
        parent = hash((seed, parent, *token_ids[j * block_size : (j + 1) * block_size])) & MASK
        hashes.append(parent)


class CoreRequest:
    """One request inside the core: its tokens (prompt, then outputs), blocks, hashes and progress."""

    __slots__ = ("id", "tokens", "num_prompt", "max_tokens", "output_len", "num_computed", "blocks", "hashes",
                 "num_cached_blocks", "hold", "remote_kv", "tok_a", "tok_b", "scheduled", "num_preemptions",
                 "cached_local", "cached_external", "epoch")

    def __init__(self, req_id: str, prompt: list[int], max_tokens: int, output_len: int, hold: bool,
                 remote_kv: bool, seed: int, block_size: int) -> None:
        self.id = req_id
        self.tokens = prompt
        self.num_prompt = len(prompt)
        self.max_tokens = max_tokens
        self.output_len = output_len
        self.num_computed = 0
        self.blocks: list[int] = []
        self.hashes: list[int] = []
        extend_hashes(self.hashes, prompt, block_size, seed, len(prompt) // block_size)
        self.num_cached_blocks = 0
        self.hold = hold
        self.remote_kv = remote_kv
        h = hash((seed, self.num_prompt, *prompt[-16:])) & MASK  # same prompt, same output (greedy-like)
        self.tok_a = h % (VOCAB - FIRST_ID)
        self.tok_b = 1 + (h >> 20) % 9973
        self.scheduled = False
        self.num_preemptions = 0
        self.cached_local = 0
        self.cached_external = 0
        self.epoch = 0  # the engine's step() count when the request was added
