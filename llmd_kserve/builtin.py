"""The registry: every built-in plugin, by type name, in one explicit list (above the framework and the catalog)."""

from __future__ import annotations

import builtins
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from llmd_kserve.disagg.deciders import DECIDERS
from llmd_kserve.errors import ConfigError
from llmd_kserve.plugins.base import PluginContext, PluginKind, PluginParams
from llmd_kserve.scheduling.active_request_scorer import ActiveRequestScorer
from llmd_kserve.scheduling.approx_cache_producer import ApproxPrefixCacheProducer
from llmd_kserve.scheduling.approx_prefix import ApproxPrefixProducer
from llmd_kserve.scheduling.cache_affinity_filter import PrefixCacheAffinityFilter
from llmd_kserve.scheduling.decode_budget_filter import DecodeBudgetFilter
from llmd_kserve.scheduling.health_filter import HealthFilter
from llmd_kserve.scheduling.inflight_load import InflightLoadProducer
from llmd_kserve.scheduling.kv_utilization_scorer import KVCacheUtilizationScorer
from llmd_kserve.scheduling.max_score_picker import MaxScorePicker
from llmd_kserve.scheduling.pd_handler import PDProfileHandler
from llmd_kserve.scheduling.precise_prefix import PrecisePrefixProducer
from llmd_kserve.scheduling.predicted_ttft_scorer import PredictedTTFTScorer
from llmd_kserve.scheduling.prefix_affinity_filter import PrefixAffinityFilter
from llmd_kserve.scheduling.prefix_cache_scorer import PrecisePrefixCacheScorer, PrefixCacheScorer
from llmd_kserve.scheduling.queue_scorer import QueueScorer
from llmd_kserve.scheduling.random_picker import RandomPicker
from llmd_kserve.scheduling.role_filter import DecodeFilter, PrefillFilter, RoleFilter
from llmd_kserve.scheduling.round_robin_picker import RoundRobinPicker
from llmd_kserve.scheduling.session_affinity_filter import SessionAffinityFilter
from llmd_kserve.scheduling.session_affinity_scorer import SessionAffinityScorer
from llmd_kserve.scheduling.single_profile_handler import SingleProfileHandler
from llmd_kserve.scheduling.slo_admitter import LatencySLOAdmitter
from llmd_kserve.scheduling.slo_headroom_filter import SLOHeadroomTierFilter
from llmd_kserve.scheduling.token_load_scorer import TokenLoadScorer
from llmd_kserve.scheduling.tokenize import TokenizeProducer
from llmd_kserve.scheduling.weighted_random_picker import WeightedRandomPicker

PluginFactory = Callable[[str, Any, PluginContext], Any]
"""``factory(instance name, validated Params, ctx) -> plugin``."""


@dataclass(frozen=True, slots=True)
class PluginInfo:
    """One registered plugin type."""

    type: str
    kind: PluginKind
    factory: PluginFactory
    params: builtins.type[PluginParams]
    doc: str


def _info(cls: Any) -> PluginInfo:
    return PluginInfo(cls.type, cls.kind, cls, cls.Params, (cls.__doc__ or "").strip())


BUILTINS: tuple[PluginInfo, ...] = tuple(
    _info(cls)
    for cls in (
        # producers
        TokenizeProducer,
        PrecisePrefixProducer,
        ApproxPrefixProducer,
        ApproxPrefixCacheProducer,  # llm-d v1.0
        InflightLoadProducer,
        # filters
        RoleFilter,
        DecodeFilter,
        PrefillFilter,
        HealthFilter,
        DecodeBudgetFilter,
        PrefixAffinityFilter,
        PrefixCacheAffinityFilter,  # llm-d v1.0
        SessionAffinityFilter,
        LatencySLOAdmitter,  # llm-d v1.0 (an admission plugin there)
        SLOHeadroomTierFilter,  # llm-d v1.0
        # scorers
        PrefixCacheScorer,
        PrecisePrefixCacheScorer,
        QueueScorer,
        KVCacheUtilizationScorer,
        ActiveRequestScorer,
        TokenLoadScorer,
        SessionAffinityScorer,
        PredictedTTFTScorer,
        # pickers
        MaxScorePicker,
        WeightedRandomPicker,
        RandomPicker,
        RoundRobinPicker,
        # profile handlers
        SingleProfileHandler,
        PDProfileHandler,  # its deciders: BUILTIN_DECIDERS below
    )
)

REGISTRY: Mapping[str, PluginInfo] = MappingProxyType({p.type: p for p in BUILTINS})

BUILTIN_DECIDERS: Mapping[str, type[Any]] = MappingProxyType(dict(DECIDERS))
"""P/D deciders by name (``always``, ``never``, ``uncached-tokens``, ``predicted-ttft``). Not plugin types: a decider
is a part of ``pd-profile-handler``, chosen by its ``decider`` parameter with its own frozen ``Params`` under
``deciderParameters``; the list itself is :data:`llmd_kserve.disagg.deciders.DECIDERS` (the handler validates
against it), shown here so that this module names every built-in. The plugin contract tests cover them too."""
DEFAULT_PICKER = MaxScorePicker.type
DEFAULT_PROFILE_HANDLER = SingleProfileHandler.type


def plugin_info(type_: str, path: str = "type") -> PluginInfo:
    """The registered plugin ``type_``; ConfigError at ``path`` when there is none."""
    try:
        return REGISTRY[type_]
    except KeyError:
        raise ConfigError(f"unknown plugin type {type_!r}; known: {', '.join(sorted(REGISTRY))}", path) from None
