"""Latency profiles: the per-step time model of one GPU + model, loaded from a named built-in or a YAML/JSON file.

A profile says how long one engine step takes given what the step computes. It is fitted to measurements of a real
vLLM (see ``llmd_kserve.engine_sim.calibrate`` for the replay that checks it) and is all the simulator knows about
speed. The model, in seconds::

    tokens      = prefill_tokens + decode_seqs                 # rows of the batch
    step_time   = step_overhead_s                              # scheduling, sampling, launch (per step)
                + max(weights_floor_s, per_token_s * tokens)   # GEMMs: memory-bound floor, then compute-bound
                + attn_s * prefill_attn                        # prefill attention: sum(chunk_len * ctx_end)
                + decode_seq_s * decode_seqs                   # per-sequence cost of a decode row
                + decode_ctx_s * decode_ctx_tokens             # decode attention reads the whole context

``prefill_attn`` defaults to ``prefill_tokens * prefill_ctx_tokens`` (exact for one chunk). Besides the step model a
request pays a front-end latency once, before it reaches the scheduler (HTTP, validation, block hashing)::

    request_overhead(prompt_len) = request_overhead_s + request_overhead_per_token_s * prompt_len

File format (YAML or JSON, every field of :class:`LatencyProfile`; unknown keys are rejected)::

    name: a100-mistral7b
    description: my measurements
    num_gpu_blocks: 20000          # KV blocks vLLM reports in vllm:cache_config_info
    block_size: 16
    max_num_batched_tokens: 8192   # per-step token budget (chunked prefill)
    max_num_seqs: 1024
    max_model_len: 16384
    kv_bytes_per_token: 131072     # 2 * layers * kv_heads * head_dim * dtype bytes
    kv_link_gbps: 25.0             # default P/D transfer bandwidth, GB/s
    step_overhead_s: 0.0014
    weights_floor_s: 0.0047
    per_token_s: 2.08e-5
    attn_s: 7.7e-10
    decode_seq_s: 2.2e-6
    decode_ctx_s: 4.0e-8
    request_overhead_s: 0.0073
    request_overhead_per_token_s: 1.65e-6
    vllm_version: "0.26"           # whose rules the simulated engine follows where vLLM versions differ
    async_scheduling: true         # the measured vLLM's default (vLLM 0.32 turns it off on CPU)
    serial_frontend: false         # requests pass the API server one at a time (engine_sim.frontend)
    frontend_on_engine_core: false # the API server shares the engine's core (a one-core CPU replica)

Load with ``load_profile("h100-llama8b")`` (a built-in name: a file in ``llmd_kserve/profiles/``) or
``load_profile("path/to/profile.yaml")``.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Literal

import pydantic
import yaml

from llmd_kserve.defaults import DEFAULT_PROFILE
from llmd_kserve.errors import ConfigError, config_error_from

_BUILTIN_DIR = Path(__file__).parent / "profiles"

VllmVersion = Literal["0.26", "0.32"]
"""The vLLM versions whose engine rules the simulated engine can follow (see ``engine_sim.core``)."""


class LatencyProfile(pydantic.BaseModel, frozen=True, extra="forbid"):
    """A GPU + model's step-time model and KV geometry (see the module docstring for the formula and file format)."""

    name: str
    description: str = ""
    num_gpu_blocks: int = pydantic.Field(gt=0)
    block_size: int = pydantic.Field(default=16, gt=0)
    max_num_batched_tokens: int = pydantic.Field(gt=0)
    max_num_seqs: int = pydantic.Field(default=1024, gt=0)
    max_model_len: int = pydantic.Field(default=16384, gt=0)
    kv_bytes_per_token: int = pydantic.Field(gt=0)
    kv_link_gbps: float = pydantic.Field(default=25.0, gt=0)
    step_overhead_s: float = pydantic.Field(default=0.0, ge=0)
    weights_floor_s: float = pydantic.Field(default=0.0, ge=0)
    per_token_s: float = pydantic.Field(default=0.0, ge=0)
    attn_s: float = pydantic.Field(default=0.0, ge=0)
    decode_seq_s: float = pydantic.Field(default=0.0, ge=0)
    decode_ctx_s: float = pydantic.Field(default=0.0, ge=0)
    request_overhead_s: float = pydantic.Field(default=0.0, ge=0)
    request_overhead_per_token_s: float = pydantic.Field(default=0.0, ge=0)
    vllm_version: VllmVersion = "0.26"
    """The vLLM the profile was measured on: the simulated engine follows its rules where versions differ."""
    async_scheduling: bool = True
    """Whether that vLLM ran with async scheduling (0.26 on GPU: yes; 0.32 on CPU: no, the platform turns it off)."""
    serial_frontend: bool = False
    """Requests pass the front end one at a time, each taking ``request_overhead``: vLLM's API server is one process
    whose event loop runs ``AsyncLLM.add_request`` -> ``InputProcessor.process_inputs`` for each request in turn, so
    requests sent together reach the scheduler ``request_overhead`` apart. False: each pays it independently."""
    frontend_on_engine_core: bool = False
    """The front end runs on the engine's own core (a CPU replica pinned to one core: API server, engine core and
    worker share it), so front-end work done while the engine is stepping lengthens the engine's next step."""

    def step_time(
        self,
        prefill_tokens: int,
        prefill_ctx_tokens: int,
        decode_seqs: int,
        decode_ctx_tokens: int,
        prefill_attn: float | None = None,
    ) -> float:
        """Seconds for one engine step.

        ``prefill_tokens`` new prompt tokens whose attention spans ``prefill_ctx_tokens`` (cached + new, at the end of
        the chunk); ``decode_seqs`` sequences decoding one token each over ``decode_ctx_tokens`` total context.
        ``prefill_attn`` (optional) is ``sum(chunk_len * ctx_end)`` over the step's prefill chunks, for steps holding
        several; by default ``prefill_tokens * prefill_ctx_tokens``.
        """
        tokens = prefill_tokens + decode_seqs
        if tokens <= 0:
            return 0.0
        if prefill_attn is None:
            prefill_attn = prefill_tokens * prefill_ctx_tokens
        gemm = self.per_token_s * tokens
        if gemm < self.weights_floor_s:
            gemm = self.weights_floor_s
        return (
            self.step_overhead_s
            + gemm
            + self.attn_s * prefill_attn
            + self.decode_seq_s * decode_seqs
            + self.decode_ctx_s * decode_ctx_tokens
        )

    def request_overhead(self, prompt_tokens: int) -> float:
        """Front-end latency a request pays once before it reaches the scheduler (HTTP, validation, hashing)."""
        return self.request_overhead_s + self.request_overhead_per_token_s * prompt_tokens

    def prefill_time(self, new_tokens: int, cached_tokens: int = 0) -> float:
        """Isolated TTFT estimate: front-end latency plus the prefill chunked by the token budget, nothing else running."""
        total = self.request_overhead(new_tokens + cached_tokens)
        done = cached_tokens
        left = new_tokens
        if left <= 0:  # vLLM always recomputes at least the last token
            left = 1
            done = max(0, cached_tokens - 1)
        while left > 0:
            chunk = min(left, self.max_num_batched_tokens)
            done += chunk
            left -= chunk
            total += self.step_time(chunk, done, 0, 0)
        return total

    def kv_transfer_time(self, tokens: int, gbps: float | None = None) -> float:
        """Seconds to pull the KV of ``tokens`` tokens over the P/D link (``gbps`` GB/s, default the profile's)."""
        rate = (gbps if gbps is not None else self.kv_link_gbps) * 1e9
        return self.kv_bytes_per_token * tokens / rate


def builtin_profiles() -> list[str]:
    """Names of the profiles shipped with the package."""
    return sorted(p.stem for p in _BUILTIN_DIR.glob("*.yaml"))


@lru_cache(maxsize=32)
def _load_file(path: str) -> LatencyProfile:
    p = Path(path)
    try:
        text = p.read_text()
        data = json.loads(text) if p.suffix == ".json" else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read latency profile: {exc}", path=str(p)) from exc
    if not isinstance(data, dict):
        raise ConfigError("a latency profile must be a mapping", path=str(p))
    try:
        return LatencyProfile.model_validate(data)
    except pydantic.ValidationError as exc:
        raise config_error_from(exc, f"{p}:") from exc


def load_profile(name_or_path: str = DEFAULT_PROFILE) -> LatencyProfile:
    """A built-in profile by name (``h100-llama8b``) or a YAML/JSON profile file by path; raises ConfigError."""
    builtin = _BUILTIN_DIR / f"{name_or_path}.yaml"
    if "/" not in name_or_path and builtin.is_file():
        return _load_file(str(builtin))
    if Path(name_or_path).is_file():
        return _load_file(str(Path(name_or_path).resolve()))
    raise ConfigError(f"no such latency profile (built-ins: {', '.join(builtin_profiles())})", path=name_or_path)
