"""Workload generators: synthetic single-token-word text, and each workload spec turned into requests in send order."""

from __future__ import annotations

import math
import random

from llmd_kserve.bench.workloads.specs import (
    ChatSpec,
    RagSpec,
    ReasoningSpec,
    RequestSpec,
    SharedPrefixSpec,
    TraceSpec,
    WorkloadSpec,
)
from llmd_kserve.bench.workloads.trace import fit_lengths
from llmd_kserve.tokenizer import SimTokenizer, render_chat

_CONS, _VOWELS = "bcdfghjklmnprstvwz", "aeiou"
# 1,620 three-letter and 90 two-letter words; " " + word is always one SimTokenizer token.
WORDS: tuple[str, ...] = tuple(c + v for c in _CONS for v in _VOWELS) + tuple(
    c + v + d for c in _CONS for v in _VOWELS for d in _CONS
)
_TOKENIZER = SimTokenizer()


def synth_text(rng: random.Random, n: int, *, continuation: bool = False) -> str:
    """``n`` tokens of words; ``continuation`` starts with a space so it can follow other synthetic text."""
    if n <= 0:
        return ""
    words = rng.choices(WORDS, k=n)
    return (" " if continuation else "") + " ".join(words)


def _completion(rid: str, prompt: str, n_tokens: int, max_tokens: int, group: str | None = None) -> RequestSpec:
    return RequestSpec(rid, None, prompt, max_tokens, n_tokens, group=group)


def _shared_prefix(spec: SharedPrefixSpec, rng: random.Random, n: int | None) -> list[RequestSpec]:
    per_group = spec.prompts_per_group if n is None else math.ceil(n / spec.num_groups)
    systems = [synth_text(rng, spec.system_prompt_len) for _ in range(spec.num_groups)]
    out = []
    if spec.zipf_s > 0:  # Zipf-skewed popularity: group of each request drawn by weight 1 / rank**s
        weights = [1.0 / (g + 1) ** spec.zipf_s for g in range(spec.num_groups)]
        total = spec.num_groups * per_group if n is None else n
        for i, g in enumerate(rng.choices(range(spec.num_groups), weights, k=total)):
            question = synth_text(rng, spec.question_len, continuation=bool(systems[g]))
            out.append(_completion(f"sp-g{g}-q{i}", systems[g] + question, spec.system_prompt_len + spec.question_len,
                                   spec.output_len, f"g{g}"))
        return out
    for g, system in enumerate(systems):
        for q in range(per_group):
            question = synth_text(rng, spec.question_len, continuation=bool(system))
            n_tok = spec.system_prompt_len + spec.question_len
            out.append(_completion(f"sp-g{g}-q{q}", system + question, n_tok, spec.output_len, f"g{g}"))
    rng.shuffle(out)
    return out


def _chat(spec: ChatSpec, rng: random.Random, n: int | None) -> list[RequestSpec]:
    sessions = spec.num_sessions if n is None else math.ceil(n / spec.turns_per_session)
    turns: list[list[RequestSpec]] = []
    for s in range(sessions):
        history: list[tuple[str, str]] = []
        if spec.system_prompt_len:
            history.append(("system", synth_text(rng, spec.system_prompt_len)))
        turns.append([])
        for t in range(spec.turns_per_session):
            history.append(("user", synth_text(rng, spec.user_len)))
            msgs = tuple(history)
            prompt = render_chat([{"role": r, "content": c} for r, c in msgs])
            turns[-1].append(RequestSpec(f"chat-s{s}-t{t}", None, prompt, spec.output_len,
                                         len(_TOKENIZER.encode(prompt)), "chat", f"s{s}", f"s{s}", msgs))
            history.append(("assistant", synth_text(rng, spec.output_len)))
    order = [s for s in range(sessions) for _ in range(spec.turns_per_session)]
    rng.shuffle(order)  # interleave sessions, each session's turns stay in order
    pending = [iter(session) for session in turns]
    return [next(pending[s]) for s in order]


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
    """One request per entry: the text of block ``h`` is the same for every request naming ``h`` (drawn from
    ``seed`` and ``h``), so requests sharing hash ids share exactly those prompt tokens; entries fitted to
    ``spec.max_model_len`` (see ``trace.fit_lengths``); ids keep the entry's index."""
    entries = spec.entries if n is None else spec.entries[:n]
    t0 = min((e.timestamp for e in entries), default=0.0)
    size = spec.block_tokens
    blocks: dict[int, tuple[list[str], str]] = {}

    def block(hid: int) -> tuple[list[str], str]:  # (words, text), deterministic per (seed, hash id)
        got = blocks.get(hid)
        if got is None:
            words = random.Random(f"{seed}:{hid}").choices(WORDS, k=size)
            got = blocks[hid] = (words, " ".join(words))
        return got

    out = []
    for i, e in enumerate(entries):
        lengths = fit_lengths(e, spec.max_model_len, spec.fit)
        if lengths is None:
            continue
        n_in, n_out = lengths
        full, rest = divmod(min(n_in, len(e.hash_ids) * size), size)
        parts = [block(h)[1] for h in e.hash_ids[:full]]
        if rest:
            parts.append(" ".join(block(e.hash_ids[full])[0][:rest]))
        missing = n_in - full * size - rest  # a trace without (enough) hash ids: unique filler
        if missing:
            parts.append(" ".join(rng.choices(WORDS, k=missing)))
        arrival = (e.timestamp - t0) / 1000.0 * spec.time_scale
        group = f"h{e.hash_ids[0]}" if e.hash_ids else None
        out.append(RequestSpec(f"trace-{i}", arrival, " ".join(parts), n_out, n_in, group=group))
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
