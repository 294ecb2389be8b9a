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
    load_trace(path, fmt="mooncake", block_tokens=512, time_scale=1.0, window=None, max_requests=None,
               max_model_len=None, fit="clip") -> TraceSpec                 a trace file (``TRACE_FORMATS``)
    parse_window("START:END") -> (start, end); fit_lengths(entry, max_model_len, fit) -> (input, output) | None
    fit_summary(spec, num_requests=None) -> TraceFit                      what fitting to the context cut
    describe_trace(spec, top=5) -> TraceStats                             requests, span, rate, lengths, prefix sharing

Modules: ``specs`` (the values), ``generators`` (specs -> requests), ``arrivals`` (send times), ``trace`` (files,
fitting to the context), ``trace_stats`` (a trace's structure).
Prompts are built from single-token words (``SimTokenizer`` maps `` word`` of <= 6 characters to one id), so a
prefix of N tokens is exactly N tokens and requests sharing a prefix share its token ids. For ``kind == "chat"``,
``prompt`` is the rendered chat template (what the engine tokenizes) and ``messages`` the OpenAI messages.
"""

from llmd_kserve.bench.workloads.arrivals import assign_arrivals, make_workload
from llmd_kserve.bench.workloads.generators import WORDS, build_requests, synth_text
from llmd_kserve.bench.workloads.specs import (
    WORKLOAD_ADAPTER,
    ArrivalSpec,
    ChatSpec,
    RagSpec,
    ReasoningSpec,
    RequestSpec,
    SharedPrefixSpec,
    TraceEntry,
    TraceSpec,
    WorkloadSpec,
    sweep,
)
from llmd_kserve.bench.workloads.trace import (
    TRACE_FORMATS,
    TraceFit,
    fit_lengths,
    fit_summary,
    load_trace,
    parse_window,
)
from llmd_kserve.bench.workloads.trace_stats import TraceStats, describe_trace

__all__ = [
    "TRACE_FORMATS", "WORDS", "WORKLOAD_ADAPTER", "ArrivalSpec", "ChatSpec", "RagSpec", "ReasoningSpec", "RequestSpec",
    "SharedPrefixSpec", "TraceEntry", "TraceFit", "TraceSpec", "TraceStats", "WorkloadSpec", "assign_arrivals",
    "build_requests", "describe_trace", "fit_lengths", "fit_summary", "load_trace", "make_workload", "parse_window",
    "sweep", "synth_text",
]
