"""The autoscaling signals of one runtime: ``metrics.autoscaling``'s collector wired to its flow-control queue, the
requests the director holds back, the TTFT headroom of its decisions and its endpoints' state."""

from __future__ import annotations

from typing import TYPE_CHECKING

from llmd_kserve.metrics.autoscaling import AutoscalingCollector
from llmd_kserve.types import EndpointState

if TYPE_CHECKING:
    from llmd_kserve.control.runtime import Runtime


def queue_depth(rt: Runtime) -> dict[str, int]:
    """Requests waiting in this front end per priority band (the band label: the priority as text): queued by flow
    control (a key's priority) plus held by ``latency-slo-admitter`` (the request's ``x-llmd-priority``)."""
    out = {band: n for band, n in rt.held.by_band.items()}
    flow = rt.governance.gateway.flow
    if flow is not None:
        for band, n in flow.queue.queued.items():
            out[str(band)] = out.get(str(band), 0) + n
    return out


def endpoint_ready(rt: Runtime, state: EndpointState) -> bool:
    """May take requests: fresh metrics, not ejected for failures, not suspected of a stall."""
    eid = state.id
    return not state.metrics.stale and not rt.outliers.is_ejected(eid) and eid not in rt.stalls.suspect


def autoscaling_collector(rt: Runtime) -> AutoscalingCollector:
    return AutoscalingCollector(lambda: queue_depth(rt), rt.endpoint_states, lambda s: endpoint_ready(rt, s),
                                rt.scheduler.in_flight, rt.headroom, rt.settings.pool_name)
