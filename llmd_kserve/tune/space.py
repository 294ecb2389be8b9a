"""The search space: a candidate is a router config (weights, affinity, P/D decider) plus replica counts and P:D split.

``suggest(trial, scenario)`` draws one candidate from an Optuna trial (define-by-run, so the P/D decider's
parameters exist only when the split has a prefill pool); ``candidate_from_params`` rebuilds the same candidate
from a trials-table row; ``baseline`` is the shipped ``default`` config on the scenario's baseline cluster.

Aggregated candidates have the shape of the shipped ``default`` (prefix-affinity filter, then precise-prefix,
predicted-TTFT, queue and KV-utilization scorers); P/D candidates the shape of ``pd-predicted-ttft``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from llmd_kserve.config.loader import load_config, parse_config
from llmd_kserve.tune.scenario import Scenario

if TYPE_CHECKING:
    import optuna

API = {"apiVersion": "inference.networking.x-k8s.io/v1alpha1", "kind": "EndpointPickerConfig"}

# name -> (low, high) of each float parameter; integers are the replica counts.
WEIGHTS = {"w_prefix": (0.0, 5.0), "w_ttft": (0.0, 5.0), "w_queue": (0.0, 3.0), "w_kv": (0.0, 3.0)}
AFFINITY = {"affinity_threshold": (0.05, 1.0), "affinity_margin": (0.05, 2.0), "affinity_min_margin_s": (0.0, 0.2)}
DECIDER = {"max_local_step_s": (0.005, 0.2), "remote_ttft_budget_s": (0.05, 2.0)}


@dataclass(frozen=True, slots=True)
class Candidate:
    """One point of the space: its scheduler config (an EndpointPickerConfig mapping) and cluster shape."""

    name: str
    config: dict[str, Any]
    engines: int
    prefill: int = 0
    params: dict[str, Any] = field(default_factory=dict)
    """The raw parameter values (the trials-table columns); empty for a shipped config."""

    @property
    def decode(self) -> int:
        return self.engines - self.prefill

    def gpus(self, scenario: Scenario) -> float:
        return self.engines * scenario.gpus_per_engine

    @property
    def roles(self) -> tuple[str, ...] | None:
        """Engine roles for the simulator (None: ``engines`` aggregated replicas)."""
        return ("prefill",) * self.prefill + ("decode",) * self.decode if self.prefill else None


_QUEUE = {"backlog": "queue", "tokensPerWaitingRequest": 0}
"""The shipped default's TTFT model: the fluid prefill queue, no scraped waiting floor."""


def aggregated_config(p: dict[str, Any]) -> dict[str, Any]:
    """The ``default`` shape with the candidate's weights and affinity parameters."""
    return {**API, "plugins": [
        {"type": "single-profile-handler"}, {"type": "decode-filter"}, {"type": "health-filter"},
        {"type": "latency-slo-admitter", "parameters": {
            "mode": "precise", "backlog": "queue", "tokensPerWaitingRequest": 512, "reserve": 0.7}},
        {"type": "slo-headroom-tier-filter", "parameters": {"mode": "precise", **_QUEUE}},
        {"type": "decode-budget-filter", "parameters": {"maxStepS": 0.04, "margin": 0.1}},
        {"type": "prefix-affinity-filter", "parameters": {
            "threshold": round(p["affinity_threshold"], 4), "ttftMargin": round(p["affinity_margin"], 4),
            "minMarginS": round(p["affinity_min_margin_s"], 4), "mode": "precise", **_QUEUE}},
        {"type": "precise-prefix-cache-scorer"},
        {"type": "predicted-ttft-scorer", "parameters": {"mode": "precise", **_QUEUE}},
        {"type": "queue-scorer"}, {"type": "kv-cache-utilization-scorer"}, {"type": "max-score-picker"}],
        "schedulingProfiles": [{"name": "default", "plugins": [
            {"pluginRef": "decode-filter"}, {"pluginRef": "health-filter"}, {"pluginRef": "latency-slo-admitter"},
            {"pluginRef": "decode-budget-filter"}, {"pluginRef": "slo-headroom-tier-filter"},
            {"pluginRef": "prefix-affinity-filter"},
            {"pluginRef": "precise-prefix-cache-scorer", "weight": round(p["w_prefix"], 4)},
            {"pluginRef": "predicted-ttft-scorer", "weight": round(p["w_ttft"], 4)},
            {"pluginRef": "queue-scorer", "weight": round(p["w_queue"], 4)},
            {"pluginRef": "kv-cache-utilization-scorer", "weight": round(p["w_kv"], 4)},
            {"pluginRef": "max-score-picker"}]}]}


def pd_config(p: dict[str, Any]) -> dict[str, Any]:
    """The ``pd-predicted-ttft`` shape with the candidate's weights and decider thresholds."""
    return {**API, "plugins": [
        {"type": "pd-profile-handler", "parameters": {"decider": "predicted-ttft", "deciderParameters": {
            "maxLocalStepS": round(p["max_local_step_s"], 4), "remoteTtftBudgetS": round(p["remote_ttft_budget_s"], 4)}}},
        {"type": "precise-prefix-producer"}, {"type": "inflight-load-producer"}, {"type": "decode-filter"},
        {"type": "prefill-filter"}, {"type": "health-filter"}, {"type": "precise-prefix-cache-scorer"},
        {"type": "predicted-ttft-scorer", "parameters": {"mode": "precise"}}, {"type": "queue-scorer"},
        {"type": "kv-cache-utilization-scorer"}, {"type": "active-request-scorer"}, {"type": "max-score-picker"}],
        "schedulingProfiles": [
            {"name": "decode", "plugins": [
                {"pluginRef": "decode-filter"}, {"pluginRef": "health-filter"},
                {"pluginRef": "precise-prefix-cache-scorer", "weight": round(p["w_prefix"], 4)},
                {"pluginRef": "kv-cache-utilization-scorer", "weight": round(p["w_kv"], 4)},
                {"pluginRef": "active-request-scorer", "weight": 1},
                {"pluginRef": "queue-scorer", "weight": round(p["w_queue"], 4)},
                {"pluginRef": "max-score-picker"}]},
            {"name": "prefill", "plugins": [
                {"pluginRef": "prefill-filter"}, {"pluginRef": "health-filter"},
                {"pluginRef": "precise-prefix-cache-scorer", "weight": 1},
                {"pluginRef": "predicted-ttft-scorer", "weight": round(p["w_ttft"], 4)},
                {"pluginRef": "queue-scorer", "weight": 1},
                {"pluginRef": "max-score-picker"}]}]}


def candidate_from_params(params: dict[str, Any], name: str = "candidate") -> Candidate:
    """The candidate a trial's parameters describe (validated: a bad value raises ConfigError)."""
    engines, prefill = int(params["engines"]), int(params.get("prefill") or 0)
    config = pd_config(params) if prefill else aggregated_config(params)
    parse_config(config, name)  # fail here, not in the simulator
    return Candidate(name, config, engines, prefill, dict(params))


def suggest(trial: optuna.Trial, scenario: Scenario) -> Candidate:
    """Draw one candidate: replica count, P:D split, weights, then affinity or decider parameters."""
    p: dict[str, Any] = {"engines": trial.suggest_int("engines", scenario.min_engines, scenario.max_engines)}
    max_prefill = min(scenario.max_prefill, p["engines"] - 1)
    p["prefill"] = trial.suggest_int("prefill", 0, max_prefill) if max_prefill > 0 else 0
    for name, (lo, hi) in WEIGHTS.items():
        p[name] = trial.suggest_float(name, lo, hi)
    for name, (lo, hi) in (DECIDER if p["prefill"] else AFFINITY).items():
        p[name] = trial.suggest_float(name, lo, hi)
    return candidate_from_params(p, f"trial-{trial.number}")


def baseline(scenario: Scenario, config: str = "default") -> Candidate:
    """A shipped config on the scenario's baseline cluster (``engines`` aggregated replicas)."""
    cfg = load_config(config)
    return Candidate(config, cfg.model_dump(by_alias=True, exclude_none=True), scenario.engines)
