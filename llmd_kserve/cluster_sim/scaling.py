"""Scaling policies on the router's signals: static N, KEDA's queue-length rule, and headroom-driven (ours).

A policy sees one :class:`RouterSignals` snapshot per poll and answers how many replicas it wants. The signals are
the metrics the router exports, by the same names, so the simulator and the KEDA manifests speak the same language:

* ``llmd_router_queue_depth{band}``: requests waiting at the router per priority band (flow control's queue);
* ``llmd_router_ttft_headroom_seconds``: the TTFT target minus the best ready endpoint's predicted time to first
  token (``latency-slo-admitter``'s prediction; negative: no endpoint can meet the target);
* ``llmd_router_kv_usage_ratio``: the ready endpoints' mean KV-cache usage (``vllm:kv_cache_usage_perc``);
* ``llmd_router_slo_requests_total{band, outcome}``: the share of answered requests that missed a target.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class RouterSignals:
    """What the router exports at one poll (virtual time ``t``), and the replica counts Kubernetes reports."""

    t: float
    replicas: int
    """Replicas asked for (ready + starting; draining ones no longer count), as a Deployment's ``spec.replicas``."""
    ready: int
    """Replicas the router schedules to."""
    queue_depth: Mapping[int, int] = field(default_factory=dict)
    """``llmd_router_queue_depth{band}``: requests waiting at the router, per priority band."""
    ttft_headroom_s: float | None = None
    """``llmd_router_ttft_headroom_seconds`` (None: no ready endpoint to predict on)."""
    kv_usage: float = 0.0
    """``llmd_router_kv_usage_ratio``: mean KV-cache usage of the ready endpoints, 0..1."""
    slo_miss_ratio: float | None = None
    """Share of the requests answered lately that missed their TTFT or TPOT target (the rate of
    ``llmd_router_slo_requests_total{outcome=~"ttft_missed|tpot_missed"}`` over the answered; None: too few)."""

    @property
    def queued(self) -> int:
        """Requests waiting at the router, all bands."""
        return sum(self.queue_depth.values())


@runtime_checkable
class ScalingPolicy(Protocol):
    """Decides a replica count from the router's signals; called once per poll interval, in time order."""

    name: str

    def desired(self, signals: RouterSignals) -> int:
        """Replicas wanted now (the autoscaler clamps it to its min and max)."""
        ...


class StaticPolicy:
    """A fixed replica count (the static plan)."""

    def __init__(self, replicas: int) -> None:
        self.replicas = replicas
        self.name = f"static-{replicas}"

    def desired(self, signals: RouterSignals) -> int:
        return self.replicas


class KedaQueuePolicy:
    """KEDA's Prometheus scaler on ``sum(llmd_router_queue_depth)`` with HPA's rules: ``desiredReplicas =
    ceil(metric / target)`` (``metricType: AverageValue``), no change within HPA's 10% tolerance, scale-up at most
    ``max(100%, 4 pods)`` per step, and for scale-down the highest recommendation of the last
    ``stabilization_s`` (HPA's ``scaleDown.stabilizationWindowSeconds``, default 300 s). The poll interval is KEDA's
    ``pollingInterval`` (the autoscaler's)."""

    name = "keda-queue"

    def __init__(self, target: float = 2.0, stabilization_s: float = 300.0, tolerance: float = 0.1) -> None:
        if target <= 0:
            raise ValueError("the queue target per replica must be positive")
        self.target = target
        self.stabilization_s = stabilization_s
        self.tolerance = tolerance
        self._history: deque[tuple[float, int]] = deque()

    def desired(self, signals: RouterSignals) -> int:
        current = signals.replicas
        if not self._history:  # a running service: the current count stood through the last window
            self._history.append((signals.t, current))
        usage = signals.queued / (self.target * current) if current > 0 else math.inf  # HPA's usage ratio
        raw = current if abs(usage - 1.0) <= self.tolerance else math.ceil(signals.queued / self.target)
        raw = min(raw, max(2 * current, current + 4))  # HPA's default scale-up policy (per sync period)
        self._history.append((signals.t, raw))
        while self._history and self._history[0][0] < signals.t - self.stabilization_s:
            self._history.popleft()
        if raw >= current:
            return raw
        return min(current, max(r for _, r in self._history))  # scale down only to the window's highest


class HeadroomPolicy:
    """Ours: scale on predicted TTFT headroom, the router's queue and KV usage, with hysteresis and a cooldown.

    * **Up** at once when a band queues at the router, the headroom is below ``up_headroom`` x the target, KV
      usage is above ``kv_high`` or more than ``miss_high`` of the requests answered lately missed a target: to
      the replicas that would bring KV usage down to ``kv_low`` and work off the queue (``queue_per_replica`` waiting requests for each new one), at least one more unless some are starting
      (they count: they take the queue once ready); it at most doubles per poll.
    * **Down** by one after ``cooldown_s`` of calm since the last change (nothing queued, headroom at least
      ``down_headroom`` x the target, KV usage at most ``kv_high``, at most ``miss_low`` missed), when the calm
      period's highest KV usage spread over one replica fewer stays below ``kv_low`` and that count has not come
      under pressure (a scale-up) within ``memory_s`` (default ten cooldowns): a level that failed is not
      probed again soon. The KV, headroom and miss levels are the hysteresis that keeps it from flapping.
    """

    name = "headroom"

    def __init__(self, ttft_target_s: float = 2.0, *, up_headroom: float = 0.0, down_headroom: float = 0.5,
                 kv_high: float = 0.85, kv_low: float = 0.6, queue_per_replica: float = 8.0,
                 cooldown_s: float = 120.0, miss_high: float = 0.05, miss_low: float = 0.01,
                 memory_s: float | None = None) -> None:
        if not 0 < kv_low < kv_high <= 1:
            raise ValueError("need 0 < kv_low < kv_high <= 1")
        if up_headroom >= down_headroom:
            raise ValueError("up_headroom must be below down_headroom (hysteresis)")
        self.target = ttft_target_s
        self.up_headroom, self.down_headroom = up_headroom, down_headroom
        self.kv_high, self.kv_low = kv_high, kv_low
        self.queue_per_replica = queue_per_replica
        self.cooldown_s = cooldown_s
        self.miss_high, self.miss_low = miss_high, miss_low
        self.memory_s = 10 * cooldown_s if memory_s is None else memory_s
        self._last_change = -math.inf
        self._last_replicas: int | None = None
        self._calm: list[tuple[float, float]] = []  # (t, KV usage x ready replicas) since the calm began
        self._failed: dict[int, float] = {}  # replica count -> when it last came under pressure

    def desired(self, s: RouterSignals) -> int:
        current = s.replicas
        if self._last_replicas is not None and current != self._last_replicas:
            self._last_change = s.t  # the replica count moved (ours, or the autoscaler's bounds)
        self._last_replicas = current
        load = s.kv_usage * s.ready  # replicas' worth of KV in use
        headroom, miss = s.ttft_headroom_s, s.slo_miss_ratio
        if s.queued > 0 or (headroom is not None and headroom < self.up_headroom * self.target) \
                or s.kv_usage > self.kv_high or (miss is not None and miss > self.miss_high):
            self._calm.clear()
            self._failed[s.ready] = s.t
            starting = current - s.ready
            need = max(math.ceil(load / self.kv_low), s.ready + math.ceil(s.queued / self.queue_per_replica),
                       current + (starting == 0))  # one more at least, unless some are on their way
            want = min(need, 2 * current)
            if want > current:
                self._last_change = s.t
            return max(want, current)
        if (headroom is not None and headroom < self.down_headroom * self.target) or \
                (miss is not None and miss > self.miss_low):
            self._calm.clear()
            return current
        self._calm.append((s.t, load))
        if s.t - max(self._calm[0][0], self._last_change) < self.cooldown_s or current <= 1:
            return current
        peak = max(x for _, x in self._calm)
        want = current - 1
        failed = self._failed.get(want)
        if peak / want >= self.kv_low or (failed is not None and s.t - failed < self.memory_s):
            return current  # one fewer would fill the KV cache, or came under pressure lately
        if want >= 1:
            self._last_change = s.t
            self._calm.clear()
            return want
        return current


POLICIES = ("headroom", "keda-queue", "static")


def make_policy(name: str, *, replicas: int, ttft_target_s: float = 2.0, keda_target: float = 2.0,
                stabilization_s: float = 300.0, cooldown_s: float = 120.0) -> ScalingPolicy:
    """A policy by name (``POLICIES``); ``replicas`` is the static count for ``static``."""
    if name == "static":
        return StaticPolicy(replicas)
    if name == "keda-queue":
        return KedaQueuePolicy(keda_target, stabilization_s)
    if name == "headroom":
        return HeadroomPolicy(ttft_target_s, cooldown_s=cooldown_s)
    raise ValueError(f"unknown autoscaling policy {name!r} (choose from {', '.join(POLICIES)})")
