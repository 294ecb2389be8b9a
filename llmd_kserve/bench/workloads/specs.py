"""Workload values: the request (``RequestSpec``), the frozen pydantic workload specs and the arrival spec."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator

from llmd_kserve.types import Objective


@dataclass(frozen=True, slots=True)
class RequestSpec:
    """One request of a workload, in send order."""

    request_id: str
    arrival_s: float | None
    prompt: str
    max_tokens: int
    prompt_tokens: int
    kind: Literal["completion", "chat"] = "completion"
    session_id: str | None = None
    group: str | None = None
    messages: tuple[tuple[str, str], ...] | None = None  # (role, content) pairs for chat requests
    objective: Objective | None = None
    """Priority and latency targets (sent as ``x-llmd-priority`` / ``x-llm-d-slo-*`` headers)."""

    def openai_messages(self) -> list[dict[str, str]]:
        return [{"role": r, "content": c} for r, c in (self.messages or ())]



class _Spec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SharedPrefixSpec(_Spec):
    """inference-perf's shared_prefix: ``num_groups`` system prompts, each followed by distinct questions."""

    kind: Literal["shared-prefix"] = "shared-prefix"
    num_groups: int = Field(8, ge=1)
    prompts_per_group: int = Field(16, ge=1)
    system_prompt_len: int = Field(2048, ge=0)
    question_len: int = Field(128, ge=1)
    output_len: int = Field(64, ge=1)
    zipf_s: float = Field(0.0, ge=0)
    """Group popularity: 0 gives every group ``prompts_per_group`` requests; s > 0 draws each request's group with
    weight ``1 / rank**s`` (Zipf), so the hottest groups need more than one replica."""


class ChatSpec(_Spec):
    """Multi-turn sessions; each turn's prompt holds all previous turns incl. a synthetic assistant reply."""

    kind: Literal["chat"] = "chat"
    num_sessions: int = Field(16, ge=1)
    turns_per_session: int = Field(5, ge=1)
    system_prompt_len: int = Field(256, ge=0)
    user_len: int = Field(128, ge=1)
    output_len: int = Field(128, ge=1)


class RagSpec(_Spec):
    """Retrieval-augmented: a shared instruction, k documents from a corpus, a question; long in, short out."""

    kind: Literal["rag"] = "rag"
    num_requests: int = Field(64, ge=1)
    system_prompt_len: int = Field(256, ge=0)
    num_documents: int = Field(32, ge=1)
    document_len: int = Field(1024, ge=1)
    docs_min: int = Field(4, ge=1)
    docs_max: int = Field(7, ge=1)
    question_len: int = Field(64, ge=1)
    output_len: int = Field(64, ge=1)

    @model_validator(mode="after")
    def _check(self) -> RagSpec:
        if not self.docs_min <= self.docs_max <= self.num_documents:
            raise ValueError("need docs_min <= docs_max <= num_documents")
        return self


class ReasoningSpec(_Spec):
    """Short prompts, long generations (uniform lengths in the given ranges)."""

    kind: Literal["reasoning"] = "reasoning"
    num_requests: int = Field(64, ge=1)
    input_len_min: int = Field(64, ge=1)
    input_len_max: int = Field(256, ge=1)
    output_len_min: int = Field(1000, ge=1)
    output_len_max: int = Field(2000, ge=1)


class TraceEntry(_Spec):
    """One Mooncake trace line: ``timestamp`` in ms, lengths in tokens, one hash id per ``block_tokens`` block."""

    model_config = ConfigDict(frozen=True, extra="ignore")
    timestamp: float = 0.0
    input_length: int = Field(ge=1)
    output_length: int = Field(ge=1)
    hash_ids: tuple[int, ...] = ()


class TraceSpec(_Spec):
    """Replay of a request trace; equal hash ids give equal prompt blocks, so prefixes are shared exactly.

    ``time_scale`` multiplies the recorded gaps (0.1 replays ten times faster). With ``max_model_len`` set, a
    request that does not fit the model's context is clipped (``fit="clip"``: its output to at most half the
    context, then its input cut from the end, so its leading shared blocks stay) or left out (``fit="drop"``)."""

    kind: Literal["trace"] = "trace"
    entries: tuple[TraceEntry, ...]
    block_tokens: int = Field(512, ge=1)
    time_scale: float = Field(1.0, gt=0)
    max_model_len: int | None = Field(None, ge=2)
    fit: Literal["clip", "drop"] = "clip"
    source: str | None = None
    """Where the entries came from (a file name), for reports."""
    window: tuple[float | None, float | None] | None = None
    """The ``[start, end)`` seconds of the recorded trace the entries were taken from (None: all of it)."""


WorkloadSpec = Annotated[
    SharedPrefixSpec | ChatSpec | RagSpec | ReasoningSpec | TraceSpec, Field(discriminator="kind")
]
WORKLOAD_ADAPTER: TypeAdapter[WorkloadSpec] = TypeAdapter(WorkloadSpec)


class ArrivalSpec(_Spec):
    """When requests are sent: open loop at ``rate`` req/s, closed loop with ``concurrency``, or trace times."""

    pattern: Literal["poisson", "constant", "concurrency", "trace"] = "poisson"
    rate: float | None = Field(None, gt=0)
    concurrency: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _check(self) -> ArrivalSpec:
        if self.pattern in ("poisson", "constant") and self.rate is None:
            raise ValueError(f"{self.pattern} arrivals need a rate")
        if self.pattern == "concurrency" and self.concurrency is None:
            raise ValueError("concurrency arrivals need a concurrency")
        return self

    @property
    def label(self) -> str:
        if self.pattern == "concurrency":
            return f"concurrency={self.concurrency}"
        return "trace" if self.pattern == "trace" else f"{self.pattern}@{self.rate:g}/s"


def sweep(rates: Sequence[float], pattern: Literal["poisson", "constant"] = "poisson") -> list[ArrivalSpec]:
    """One open-loop arrival spec per rate (a rate sweep is one run per rate)."""
    return [ArrivalSpec(pattern=pattern, rate=r) for r in rates]
