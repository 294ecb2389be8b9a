"""Benchmark workloads: deterministic request lists (shared-prefix, chat, RAG, reasoning, trace) and arrival times.

Public API (pure: no I/O except ``load_trace``; all randomness from an injected ``random.Random``)::

    RequestSpec                      frozen value: request_id, arrival_s (None = closed loop), prompt, max_tokens,
                                     session_id, group, kind ("completion"|"chat"), prompt_tokens, messages
    SharedPrefixSpec / ChatSpec / RagSpec / ReasoningSpec / TraceSpec     frozen pydantic specs (``kind`` tag)
    WorkloadSpec                     their discriminated union (parse with ``WORKLOAD_ADAPTER.validate_python``)
    ArrivalSpec(pattern, rate, concurrency)  "poisson" | "constant" | "concurrency" | "trace" (keep trace times)
    sweep(rates, pattern="poisson") -> list[ArrivalSpec]
    build_requests(spec, rng, num_requests=None) -> list[RequestSpec]     requests in send order
    assign_arrivals(requests, arrival, rng) -> list[RequestSpec]          arrival_s set (None for closed loop)
    make_workload(spec, arrival, rng, num_requests=None) -> list[RequestSpec]
    synth_text(rng, n, *, continuation=False) -> str                      exactly n SimTokenizer tokens
    load_trace(path) -> TraceSpec                                         Mooncake JSONL file

Prompts are built from single-token words (``SimTokenizer`` maps `` word`` of <= 6 characters to one id), so a
prefix of N tokens is exactly N tokens and requests sharing a prefix share its token ids. For ``kind == "chat"``,
``prompt`` is the rendered chat template (what the engine tokenizes) and ``messages`` the OpenAI messages.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from llmd_kserve.errors import ConfigError
from llmd_kserve.tokenizer import SimTokenizer, render_chat

_CONS, _VOWELS = "bcdfghjklmnprstvwz", "aeiou"
# 1,620 three-letter and 90 two-letter words; " " + word is always one SimTokenizer token.
WORDS: tuple[str, ...] = tuple(c + v for c in _CONS for v in _VOWELS) + tuple(
    c + v + d for c in _CONS for v in _VOWELS for d in _CONS
)
_TOKENIZER = SimTokenizer()


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

    def openai_messages(self) -> list[dict[str, str]]:
        return [{"role": r, "content": c} for r, c in (self.messages or ())]


def synth_text(rng: random.Random, n: int, *, continuation: bool = False) -> str:
    """``n`` tokens of words; ``continuation`` starts with a space so it can follow other synthetic text."""
    if n <= 0:
        return ""
    words = rng.choices(WORDS, k=n)
    return (" " if continuation else "") + " ".join(words)


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
    """Replay of a Mooncake-style trace; equal hash ids give equal prompt blocks, so shared prefixes."""

    kind: Literal["trace"] = "trace"
    entries: tuple[TraceEntry, ...]
    block_tokens: int = Field(512, ge=1)
    speedup: float = Field(1.0, gt=0)  # >1 replays faster than recorded


WorkloadSpec = Annotated[
    SharedPrefixSpec | ChatSpec | RagSpec | ReasoningSpec | TraceSpec, Field(discriminator="kind")
]
WORKLOAD_ADAPTER: TypeAdapter[WorkloadSpec] = TypeAdapter(WorkloadSpec)
WORKLOAD_KINDS = ("shared-prefix", "chat", "rag", "reasoning", "trace")


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


# --- builders ---------------------------------------------------------------------------------------------------
def _completion(rid: str, prompt: str, n_tokens: int, max_tokens: int, group: str | None = None) -> RequestSpec:
    return RequestSpec(rid, None, prompt, max_tokens, n_tokens, "completion", None, group)


def _shared_prefix(spec: SharedPrefixSpec, rng: random.Random, n: int | None) -> list[RequestSpec]:
    per_group = spec.prompts_per_group if n is None else math.ceil(n / spec.num_groups)
    systems = [synth_text(rng, spec.system_prompt_len) for _ in range(spec.num_groups)]
    out = []
    for g, system in enumerate(systems):
        for q in range(per_group):
            question = synth_text(rng, spec.question_len, continuation=bool(system))
            n_tok = spec.system_prompt_len + spec.question_len
            out.append(_completion(f"sp-g{g}-q{q}", system + question, n_tok, spec.output_len, f"g{g}"))
    rng.shuffle(out)
    return out


def _chat(spec: ChatSpec, rng: random.Random, n: int | None) -> list[RequestSpec]:
    sessions = spec.num_sessions if n is None else math.ceil(n / spec.turns_per_session)
    turns: dict[int, list[RequestSpec]] = {}
    for s in range(sessions):
        history: list[tuple[str, str]] = []
        if spec.system_prompt_len:
            history.append(("system", synth_text(rng, spec.system_prompt_len)))
        turns[s] = []
        for t in range(spec.turns_per_session):
            history.append(("user", synth_text(rng, spec.user_len)))
            msgs = tuple(history)
            prompt = render_chat([{"role": r, "content": c} for r, c in msgs])
            turns[s].append(RequestSpec(f"chat-s{s}-t{t}", None, prompt, spec.output_len,
                                        len(_TOKENIZER.encode(prompt)), "chat", f"s{s}", f"s{s}", msgs))
            history.append(("assistant", synth_text(rng, spec.output_len)))
    order = [s for s in range(sessions) for _ in range(spec.turns_per_session)]
    rng.shuffle(order)  # interleave sessions, each session's turns stay in order
    nxt = dict.fromkeys(turns, 0)
    out = []
    for s in order:
        out.append(turns[s][nxt[s]])
        nxt[s] += 1
    return out


def _rag(spec: RagSpec, rng: random.Random, n: int | None) -> list[RequestSpec]:
    system = synth_text(rng, spec.system_prompt_len)
    docs = [synth_text(rng, spec.document_len, continuation=True) for _ in range(spec.num_documents)]
    out = []
    for i in range(spec.num_requests if n is None else n):
        k = rng.randint(spec.docs_min, spec.docs_max)
        picked = rng.sample(range(spec.num_documents), k)
        prompt = system + "".join(docs[d] for d in picked) + synth_text(rng, spec.question_len, continuation=True)
        n_tok = spec.system_prompt_len + k * spec.document_len + spec.question_len
        out.append(_completion(f"rag-{i}", prompt, n_tok, spec.output_len, f"d{picked[0]}"))
    return out


def _reasoning(spec: ReasoningSpec, rng: random.Random, n: int | None) -> list[RequestSpec]:
    out = []
    for i in range(spec.num_requests if n is None else n):
        n_in = rng.randint(spec.input_len_min, max(spec.input_len_min, spec.input_len_max))
        n_out = rng.randint(spec.output_len_min, max(spec.output_len_min, spec.output_len_max))
        out.append(_completion(f"reason-{i}", synth_text(rng, n_in), n_in, n_out))
    return out


def _trace(spec: TraceSpec, rng: random.Random, n: int | None, seed: int) -> list[RequestSpec]:
    entries = spec.entries if n is None else spec.entries[:n]
    t0 = min((e.timestamp for e in entries), default=0.0)
    blocks: dict[int, list[str]] = {}

    def block(hid: int) -> list[str]:  # deterministic per (seed, hash id): equal ids -> equal text
        if hid not in blocks:
            blocks[hid] = random.Random(f"{seed}:{hid}").choices(WORDS, k=spec.block_tokens)
        return blocks[hid]

    out = []
    for i, e in enumerate(entries):
        words: list[str] = []
        for hid in e.hash_ids:
            words.extend(block(hid))
            if len(words) >= e.input_length:
                break
        if len(words) < e.input_length:  # trace without (enough) hash ids: unique filler
            words.extend(rng.choices(WORDS, k=e.input_length - len(words)))
        words = words[: e.input_length]
        arrival = (e.timestamp - t0) / 1000.0 / spec.speedup
        group = f"h{e.hash_ids[0]}" if e.hash_ids else None
        out.append(RequestSpec(f"trace-{i}", arrival, " ".join(words), e.output_length, e.input_length,
                               "completion", None, group))
    return out


def build_requests(spec: WorkloadSpec, rng: random.Random, num_requests: int | None = None) -> list[RequestSpec]:
    """The workload's requests in send order; ``num_requests`` scales the spec's count and truncates."""
    if isinstance(spec, SharedPrefixSpec):
        out = _shared_prefix(spec, rng, num_requests)
    elif isinstance(spec, ChatSpec):
        out = _chat(spec, rng, num_requests)
    elif isinstance(spec, RagSpec):
        out = _rag(spec, rng, num_requests)
    elif isinstance(spec, ReasoningSpec):
        out = _reasoning(spec, rng, num_requests)
    elif isinstance(spec, TraceSpec):
        out = _trace(spec, rng, num_requests, seed=rng.randrange(2**31))
    else:  # pragma: no cover - the union is closed
        raise TypeError(f"unknown workload spec {type(spec).__name__}")
    return out if num_requests is None else out[:num_requests]


def assign_arrivals(requests: Sequence[RequestSpec], arrival: ArrivalSpec, rng: random.Random) -> list[RequestSpec]:
    """Set ``arrival_s`` (seconds from the run's start): Poisson / constant gaps, None for closed loop."""
    if arrival.pattern == "trace":
        return list(requests)
    if arrival.pattern == "concurrency":
        return [replace(r, arrival_s=None) for r in requests]
    assert arrival.rate is not None
    t, out = 0.0, []
    for r in requests:
        out.append(replace(r, arrival_s=t))
        t += rng.expovariate(arrival.rate) if arrival.pattern == "poisson" else 1.0 / arrival.rate
    return out


def make_workload(spec: WorkloadSpec, arrival: ArrivalSpec, rng: random.Random,
                  num_requests: int | None = None) -> list[RequestSpec]:
    """``build_requests`` then ``assign_arrivals`` with the same generator."""
    return assign_arrivals(build_requests(spec, rng, num_requests), arrival, rng)


def load_trace(path: str | Path, *, block_tokens: int = 512, speedup: float = 1.0) -> TraceSpec:
    """Parse a Mooncake JSONL trace (``timestamp`` ms, ``input_length``, ``output_length``, ``hash_ids``)."""
    p = Path(path)
    try:
        lines = p.read_text().splitlines()
    except OSError as exc:
        raise ConfigError(f"cannot read trace: {exc}", str(p)) from exc
    entries = []
    for no, line in enumerate(lines, 1):
        if line.strip():
            try:
                entries.append(TraceEntry.model_validate(json.loads(line)))
            except ValidationError as exc:
                err = exc.errors()[0]
                field = ".".join(str(x) for x in err["loc"])
                raise ConfigError(f"bad trace line: {field}: {err['msg']}", f"{p}:{no}") from exc
            except (ValueError, TypeError) as exc:
                raise ConfigError(f"bad trace line: {exc}", f"{p}:{no}") from exc
    return TraceSpec(entries=tuple(entries), block_tokens=block_tokens, speedup=speedup)
