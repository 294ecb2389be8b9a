"""Value types shared by the router, scheduler, KV index, simulator and benchmarks."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, NewType

from llmd_kserve.prompt import Prompt

EndpointId = NewType("EndpointId", str)
"""An endpoint's base URL, e.g. ``http://10.0.0.5:8000`` (no trailing slash)."""

BlockKey = NewType("BlockKey", int)
"""The router's own chained hash of one full KV block (see ``kvcache.hashing``)."""

EngineBlockHash = NewType("EngineBlockHash", int)
"""A block hash as an engine reports it in KV events (bytes hashes are folded to int)."""

Role = Literal["prefill", "decode", "both"]
ROLES: tuple[Role, ...] = ("prefill", "decode", "both")

PROFILE_LABEL = "llmd-kserve.io/latency-profile"
"""Endpoint (pod) label naming the replica's latency profile (a built-in name or a file), for pools of mixed GPUs:
the latency-model plugins time that endpoint with it instead of the router's ``--profile``."""


class Load(NamedTuple):
    """Router-side load on one endpoint: requests sent and not finished, and their uncached prompt tokens."""

    requests: int = 0
    tokens: int = 0


NO_LOAD = Load()


@dataclass(frozen=True, slots=True)
class PDVerdict:
    """A prefill/decode decision, with the numbers behind it (``/debug/decisions`` and tests read them)."""

    remote: bool
    """True: prefill on a separate prefill endpoint, then decode; False: the decode endpoint prefills locally."""
    reason: str
    uncached_tokens: int = 0
    """Prompt tokens the decode endpoint lacks (what a local prefill computes, what a transfer moves)."""
    local_ttft_s: float | None = None
    remote_ttft_s: float | None = None


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One model-server replica the router may send requests to."""

    id: EndpointId
    role: Role = "both"
    kv_events: str | None = None
    """ZMQ endpoint of its KV-event publisher, e.g. ``tcp://10.0.0.5:5557``; None: no precise index."""
    kv_replay: str | None = None
    """ZMQ endpoint of the publisher's replay socket (vLLM ``replay_endpoint``); None: sequence gaps are only counted."""
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class EndpointMetrics:
    """One scrape of an endpoint's ``/metrics`` (vLLM names), replaced whole on each scrape."""

    waiting: int = 0
    running: int = 0
    kv_usage: float = 0.0
    """``vllm:kv_cache_usage_perc`` in [0, 1]."""
    block_size: int | None = None
    num_gpu_blocks: int | None = None
    prefix_queries: float = 0.0
    prefix_hits: float = 0.0
    scraped_at: float = 0.0
    """Clock time of the scrape (``time.monotonic`` in live use, virtual time in the simulator)."""
    stale: bool = True
    """True until the first good scrape, and when the last good scrape is older than the staleness limit."""


@dataclass(frozen=True, slots=True)
class EndpointState:
    """What the scheduler sees of one endpoint: identity plus its latest metrics snapshot."""

    endpoint: Endpoint
    metrics: EndpointMetrics = EndpointMetrics()

    @property
    def id(self) -> EndpointId:
        return self.endpoint.id


@dataclass(frozen=True, slots=True)
class Objective:
    """A request's service objective (``control.slo`` reads it from headers): its priority (below 0: sheddable) and
    its time-to-first-token and time-per-output-token targets in seconds (None: none)."""

    priority: int = 0
    ttft_s: float | None = None
    tpot_s: float | None = None

    @property
    def sheddable(self) -> bool:
        return self.priority < 0

    @property
    def band(self) -> str:
        """The metrics label of its priority band: the priority as text."""
        return str(self.priority)


@dataclass(frozen=True, slots=True)
class LLMRequest:
    """A request as the scheduler sees it: already parsed and validated by the router."""

    request_id: str
    model: str
    body: Mapping[str, Any]
    """The OpenAI JSON body as the client sent it."""
    kind: Literal["completion", "chat"] = "completion"
    token_ids: tuple[int, ...] | None = None
    """Prompt token ids when known (client sent ids, or the router rendered the prompt); else tokenized locally."""
    max_tokens: int = 16
    session_id: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    prompt: Prompt | None = None
    """The prompt as the router read it (None: read from ``body`` when a plugin needs it)."""
    objective: Objective | None = None
    """Priority and latency targets when the client sent any (``control.slo``); None: priority 0, no targets."""


@dataclass(frozen=True, slots=True)
class RequestOutcome:
    """How a scheduled request ended, fed back to stateful plugins (in-flight load, approximate prefix)."""

    ok: bool
    prompt_tokens: int = 0
    cached_tokens: int | None = None
    completion_tokens: int = 0
