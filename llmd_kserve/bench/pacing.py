"""Live-sweep pacing: requests per point, per-session turn order as sent, and the load generator's send lateness."""

from __future__ import annotations

from collections.abc import Sequence

from llmd_kserve.bench.stats import RequestResult, percentile
from llmd_kserve.bench.workloads import RequestSpec


def point_requests(rate: float, time_scale: float, duration_s: float, min_requests: int, sessions: bool) -> int:
    """Requests of one live point at ``rate`` req/s: at least ``duration_s`` virtual seconds of arrivals
    (``rate x time_scale x duration_s``) and ``min_requests``. Session scenarios keep ``min_requests`` at every
    rate: more requests would mean more concurrent sessions, i.e. another workload (as in the simulator run)."""
    if rate <= 0 or time_scale <= 0 or duration_s < 0 or min_requests < 1:
        raise ValueError(f"need rate, time_scale > 0, duration_s >= 0, min_requests >= 1; got {rate}, "
                         f"{time_scale}, {duration_s}, {min_requests}")
    return min_requests if sessions else max(min_requests, round(rate * time_scale * duration_s))


def session_order_violations(requests: Sequence[RequestSpec]) -> list[str]:
    """Session ids whose turns, sent in arrival order (the load generator's and the simulator's open loop), would
    not go out in the order the workload built them (each turn's prompt extends the previous one)."""
    built: dict[str, list[str]] = {}
    for r in requests:
        if r.session_id is not None:
            built.setdefault(r.session_id, []).append(r.request_id)
    sent: dict[str, list[str]] = {}
    for r in sorted(requests, key=lambda x: x.arrival_s or 0.0):
        if r.session_id is not None:
            sent.setdefault(r.session_id, []).append(r.request_id)
    return [s for s, ids in built.items() if sent[s] != ids]


def send_lateness(requests: Sequence[RequestSpec], results: Sequence[RequestResult]) -> dict[str, float | None]:
    """How late the load generator sent each request after its scheduled ``arrival_s`` (seconds, p50/p99/max):
    a generator that cannot keep up shows it here before it shows in the routers' numbers."""
    due = {r.request_id: r.arrival_s for r in requests if r.arrival_s is not None}
    late = [max(0.0, res.start - due[res.request_id]) for res in results if res.request_id in due]
    return {"late_p50": percentile(late, 50), "late_p99": percentile(late, 99),
            "late_max": max(late) if late else None}
