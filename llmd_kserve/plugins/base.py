"""Scheduler extension points: the per-request CycleState, the plugin context and the plugin Protocols.

A scheduling cycle runs, for one request: every **producer** once (tokens, block keys, prefix matches, in-flight
load, written into the :class:`CycleState`), then the **profile handler** chooses which scheduling profiles to run;
each profile filters the candidates, sums ``weight * clamp(score)`` over its **scorers** and lets its **picker**
choose. The handler then combines the profile results into one decision (target, optional prefill endpoint).

Today's handler runs a single profile. A prefill/decode handler fits the same shape: ``pick_profiles`` first
returns ``["decode"]``; once the decode result is in, it asks a decider (prefix already cached on the decode
endpoint? prompt short?) and returns ``["prefill"]`` or nothing; ``process_results`` then names the decode target
and the prefill endpoint.

Stateful plugins (in-flight load, approximate prefix LRU, session affinity) declare lifecycle hooks by naming hook
Protocols among their base classes (``class P(OnScheduled, EndpointRemoved)``); the scheduler calls the declared
hooks of every plugin it runs, and refuses (``ConfigError``) a plugin that declares a hook it does not implement.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from llmd_kserve.errors import ConfigError
from llmd_kserve.types import BlockKey, Endpoint, EndpointId, EndpointState, LLMRequest, Load, PDVerdict, RequestOutcome

if TYPE_CHECKING:  # heavy or not-yet-written modules: only for annotations
    from llmd_kserve.kvcache.index import KVIndex
    from llmd_kserve.latency import LatencyProfile
    from llmd_kserve.tokenizer import Tokenizer

PluginKind = Literal["producer", "filter", "scorer", "picker", "profile-handler"]
Scores = dict[EndpointId, float]


def _every_endpoint(endpoint: Endpoint) -> bool:
    return True


@dataclass(frozen=True, slots=True)
class PluginContext:
    """What plugins may use besides the request: shared services, an injected RNG and clock (no I/O)."""

    tokenizer: Tokenizer
    index: KVIndex | None
    rng: random.Random
    clock: Callable[[], float]
    profile: LatencyProfile
    block_size: int = 16
    """Block size of endpoints whose own is not known (and of ``CycleState.block_keys`` when none is)."""
    block_size_of: Callable[[EndpointState], int | None] | None = None
    """An endpoint's KV block size as its engine reports it (the router: ``kvcache.block_sizes``); None, or an
    answer of None (not known yet): ``block_size``. Unset: the endpoint's metrics (``cache_config_info``), else
    ``block_size``. Prompts are keyed per endpoint in its size, as its KV events key its blocks."""
    hash_seed: int = 0
    """Seed of the router's block keys (``kvcache.hashing``); must match the KV index's keys."""
    has_kv_events: Callable[[Endpoint], bool] = _every_endpoint
    """Whether an endpoint's KV events reach ``index``. The default (every endpoint) suits in-process engines that
    feed the index directly; the router passes ``endpoint.kv_events is not None`` (no ZMQ stream, no events)."""
    ttft_target_s: float | None = None
    """The deployment's TTFT target (``--ttft-slo-ms``): each decision then reports the best candidate's predicted
    TTFT headroom against it (``SchedulingResult.ttft_headroom_s``, the autoscaling signal); None: not computed."""


class CycleState:
    """Scratch space of one scheduling cycle: the request, what producers computed, and memoised estimates.

    Producers fill the typed fields; anything else goes in ``data`` under the producer's type name.
    """

    __slots__ = ("request", "candidates", "token_ids", "block_keys", "block_size", "block_sizes", "keys_by_size",
                 "prefix_hits", "inflight", "unscraped", "prefill_backlog", "data")

    def __init__(self, request: LLMRequest, candidates: Sequence[EndpointState]) -> None:
        self.request = request
        self.candidates: tuple[EndpointState, ...] = tuple(candidates)
        self.token_ids: Sequence[int] = ()
        self.block_keys: Sequence[BlockKey] = ()
        """Keys of the prompt's full blocks of ``block_size`` tokens (the size of most candidates)."""
        self.block_size = 0
        self.block_sizes: Mapping[EndpointId, int] = {}
        """Each candidate's block size (absent: ``block_size``); its prefix hits count blocks of that size."""
        self.keys_by_size: Mapping[int, Sequence[BlockKey]] = {}
        """The prompt's block keys in every size of ``block_sizes`` other than ``block_size``."""
        self.prefix_hits: dict[str, Mapping[EndpointId, int]] = {}
        """Leading blocks each endpoint holds, by source (``"precise"``, ``"approx"``); absent endpoint: 0."""
        self.inflight: Mapping[EndpointId, Load] | None = None
        """Router-side load per endpoint: (requests, uncached prompt tokens) sent and not finished."""
        self.unscraped: Mapping[EndpointId, Load] | None = None
        """The part of ``inflight`` charged after the endpoint's last metrics scrape (``metrics.scraped_at``): load
        its metrics cannot show yet. Load scorers add it to the scraped numbers so that requests arriving between
        two scrapes don't all go to the same "least loaded" endpoint."""
        self.prefill_backlog: Mapping[EndpointId, float] | None = None
        """Seconds of prefill work the router sent each endpoint that its engine has not worked off yet (a fluid
        queue: each request adds its predicted prefill time, the queue drains in real time); absent endpoint: 0."""
        self.data: dict[str, Any] = {}

    @property
    def prompt_tokens(self) -> int:
        return len(self.token_ids)

    def keys_for(self, endpoint_id: EndpointId) -> Sequence[BlockKey]:
        """The prompt's block keys in ``endpoint_id``'s block size (how its engine's blocks are keyed)."""
        size = self.block_sizes.get(endpoint_id)
        if size is None or size == self.block_size:
            return self.block_keys
        return self.keys_by_size.get(size, self.block_keys)

    def by_block_size(self, endpoint_ids: Iterable[EndpointId]) -> list[tuple[Sequence[BlockKey], list[EndpointId]]]:
        """``endpoint_ids`` grouped by block size, each group with the prompt's keys in that size (one group when
        every endpoint has the same size, the usual case)."""
        sizes = self.block_sizes
        if not self.keys_by_size:
            ids = list(endpoint_ids)
            return [(self.block_keys, ids)] if ids else []
        groups: dict[int, list[EndpointId]] = {}
        for eid in endpoint_ids:
            groups.setdefault(sizes.get(eid, self.block_size), []).append(eid)
        return [(self.block_keys if size == self.block_size else self.keys_by_size.get(size, self.block_keys), ids)
                for size, ids in groups.items()]

    def cached_blocks(self, endpoint_id: EndpointId, mode: str | None = None) -> int:
        """Leading blocks of the prompt cached on one endpoint according to ``mode`` (``"precise"``/``"approx"``);
        ``None``: the precise index when it ran, else the approximation, else 0."""
        if mode is None:
            hits = self.prefix_hits.get("precise")
            if hits is None:
                hits = self.prefix_hits.get("approx")
        else:
            hits = self.prefix_hits.get(mode)
        return hits.get(endpoint_id, 0) if hits else 0

    def cached_tokens(self, endpoint_id: EndpointId, block_size: int, mode: str | None = None) -> int:
        """Prompt tokens an engine would reuse: whole cached blocks, at least one prompt token left to compute
        (as vLLM does). Blocks are of the endpoint's own size when known (``block_sizes``), else ``block_size``."""
        n = len(self.token_ids)
        if n == 0:
            return 0
        block_size = self.block_sizes.get(endpoint_id, block_size)
        return min(self.cached_blocks(endpoint_id, mode), (n - 1) // block_size) * block_size


@dataclass(frozen=True, slots=True)
class ProfileResult:
    """Outcome of running one scheduling profile."""

    profile: str
    target: EndpointId | None
    """None when the filters left no candidate."""
    scores: Mapping[str, Mapping[EndpointId, float]] = field(default_factory=dict)
    """Scorer name -> endpoint -> raw (unweighted, unclamped) score."""
    totals: Mapping[EndpointId, float] = field(default_factory=dict)
    candidates: tuple[EndpointId, ...] = ()
    """Endpoints left after the profile's filters."""
    empty_filter: str | None = None
    """Name of the filter that left no candidate, when ``target`` is None."""


@dataclass(frozen=True, slots=True)
class HandlerDecision:
    """How the profile handler combined the profile results."""

    primary: str
    """Profile whose target serves the request (decode in P/D)."""
    target: EndpointId
    prefill: EndpointId | None = None
    pd: PDVerdict | None = None
    """The P/D decider's verdict (P/D handler only): why the prefill runs remotely or not, predicted TTFTs."""


class PluginParams(BaseModel):
    """Base of every plugin's parameters: frozen, camelCase in YAML (snake_case accepted), unknown keys rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid", alias_generator=to_camel, populate_by_name=True)


class PickerParams(PluginParams):
    """The parameter llm-d's pickers share."""

    max_num_of_endpoints: int = Field(1, ge=1, le=1)
    """llm-d's: endpoints to return; this router sends a request to one (it re-schedules a failed attempt)."""


@runtime_checkable
class Plugin(Protocol):
    """Every plugin has its configured instance name and its registry type."""

    name: str
    type: ClassVar[str]


@runtime_checkable
class Producer(Plugin, Protocol):
    """Computes per-request data once, before any profile runs (``requires``: producer types to run first)."""

    requires: tuple[str, ...]

    def produce(self, state: CycleState) -> None: ...


@runtime_checkable
class Filter(Plugin, Protocol):
    """Keeps a subset of the candidates (order preserved). ``requires``: producer types it reads."""

    requires: tuple[str, ...]

    def filter(self, state: CycleState, endpoints: Sequence[EndpointState]) -> Sequence[EndpointState]: ...


@runtime_checkable
class Scorer(Plugin, Protocol):
    """Scores candidates in [0, 1], higher is better; never sees its weight; keys are a subset of ``endpoints``."""

    requires: tuple[str, ...]

    def score(self, state: CycleState, endpoints: Sequence[EndpointState]) -> Scores: ...


@runtime_checkable
class Picker(Plugin, Protocol):
    """Chooses one endpoint from (endpoint, total score) pairs; randomness only from the injected RNG."""

    def pick(self, state: CycleState, scored: Sequence[tuple[EndpointState, float]]) -> EndpointState: ...


@runtime_checkable
class ProfileHandler(Plugin, Protocol):
    """Decides which profiles run (possibly in several rounds) and how their results combine."""

    @classmethod
    def validate_profiles(cls, names: Sequence[str]) -> str | None:
        """An error message when the configured profile names don't fit this handler, else None."""
        ...

    def pick_profiles(
        self, state: CycleState, profiles: Sequence[str], results: Mapping[str, ProfileResult]
    ) -> Sequence[str]:
        """Profiles to run next given the results so far; an empty answer ends the cycle."""
        ...

    def process_results(self, state: CycleState, results: Mapping[str, ProfileResult]) -> HandlerDecision:
        """The final decision; raises ``NoEndpointError`` when no profile found a target."""
        ...


class OnScheduled(Protocol):
    """Hook: sees every decision before ``Scheduler.schedule`` returns it."""

    def on_scheduled(self, state: CycleState, decision: HandlerDecision) -> None: ...


class OnComplete(Protocol):
    """Hook: a scheduled request finished, OK or not (once per decision)."""

    def on_complete(self, request: LLMRequest, decision: HandlerDecision, outcome: RequestOutcome) -> None: ...


class OnPrefillComplete(Protocol):
    """Hook: the remote prefill leg (``decision.prefill``) ended, OK or not; the decode leg goes on until
    ``on_complete``, which follows for every scheduled request."""

    def on_prefill_complete(self, request: LLMRequest, decision: HandlerDecision, outcome: RequestOutcome) -> None: ...


class EndpointRemoved(Protocol):
    """Hook: an endpoint left the pool; forget what is kept about it."""

    def remove_endpoint(self, endpoint_id: EndpointId) -> None: ...


HOOKS: Mapping[type, str] = {OnScheduled: "on_scheduled", OnComplete: "on_complete",
                             OnPrefillComplete: "on_prefill_complete", EndpointRemoved: "remove_endpoint"}
"""Each hook Protocol and the method it names."""


def declared_hooks(plugin: object) -> dict[type, Callable[..., None]]:
    """The hooks ``plugin`` declares (hook Protocols among its base classes) -> its bound implementations.
    ConfigError when it declares one that it does not implement (it only inherits the Protocol's stub)."""
    cls = type(plugin)
    found: dict[type, Callable[..., None]] = {}
    for hook, method in HOOKS.items():
        if hook not in cls.__mro__:
            continue
        if getattr(cls, method, None) is getattr(hook, method):
            name = getattr(plugin, "name", cls.__name__)
            raise ConfigError(f"plugin {name!r} ({cls.__name__}) declares hook {hook.__name__} but does not "
                              f"implement {method}()", "plugins")
        found[hook] = getattr(plugin, method)
    return found


KIND_PROTOCOLS: Mapping[PluginKind, Any] = {
    "producer": Producer, "filter": Filter, "scorer": Scorer, "picker": Picker, "profile-handler": ProfileHandler}
"""The Protocol each plugin kind implements (the contract test checks every registered plugin against it)."""
