"""Per-request service objectives: read once from the headers, refused or held back by ``latency-slo-admitter``,
counted per priority band (admitted, queued, shed, TTFT and TPOT met or missed as measured on the answer).

Headers (llm-d's names; the older ``x-slo-*`` aliases are read too): ``x-llm-d-slo-ttft-ms`` and
``x-llm-d-slo-tpot-ms`` (positive numbers of milliseconds), ``x-llmd-priority`` (an integer from -100 to 100; below
0: sheddable, as an InferenceObjective's priority). None of them: no objective (priority 0, no targets).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from llmd_kserve.errors import InvalidRequestError
from llmd_kserve.governance.limits import RateLimited
from llmd_kserve.scheduling.slo_admitter import SloUnmet
from llmd_kserve.types import Objective

TTFT_HEADERS = ("x-llm-d-slo-ttft-ms", "x-slo-ttft-ms")
TPOT_HEADERS = ("x-llm-d-slo-tpot-ms", "x-slo-tpot-ms")
PRIORITY_HEADER = "x-llmd-priority"
MAX_PRIORITY = 100
OUTCOMES = ("admitted", "queued", "shed", "ttft_met", "ttft_missed", "tpot_met", "tpot_missed")
"""The ``outcome`` label values of ``slo_requests_total``."""


def _millis(headers: Mapping[str, str], names: tuple[str, ...]) -> float | None:
    for name in names:
        raw = headers.get(name)
        if raw is None:
            continue
        try:
            ms = float(raw)
        except ValueError:
            ms = math.nan
        if not (math.isfinite(ms) and ms > 0):
            raise InvalidRequestError(f"'{name}' must be a positive number of milliseconds.", name)
        return ms / 1e3
    return None


def read_objective(headers: Mapping[str, str]) -> Objective | None:
    """The request's objective from its headers; None when it sent none; 400 for a malformed value."""
    ttft, tpot = _millis(headers, TTFT_HEADERS), _millis(headers, TPOT_HEADERS)
    raw = headers.get(PRIORITY_HEADER)
    priority = 0
    if raw is not None:
        try:
            priority = int(raw.strip())
        except ValueError:
            priority = MAX_PRIORITY + 1
        if abs(priority) > MAX_PRIORITY:
            raise InvalidRequestError(f"'{PRIORITY_HEADER}' must be an integer from -{MAX_PRIORITY} to "
                                      f"{MAX_PRIORITY}.", PRIORITY_HEADER)
    if raw is None and ttft is None and tpot is None:
        return None
    return Objective(priority, ttft, tpot)


def spent(objective: Objective, waited_s: float) -> Objective:
    """``objective`` after ``waited_s`` seconds in the queue: that much less time to its first token."""
    if objective.ttft_s is None:
        return objective
    return Objective(objective.priority, max(objective.ttft_s - waited_s, 1e-6), objective.tpot_s)


def refusal(exc: SloUnmet) -> RateLimited:
    """The 429 (with ``Retry-After``) that answers a sheddable request shed by ``latency-slo-admitter``."""
    return RateLimited(f"No endpoint can serve this sheddable request within its SLO now; retry later ({exc}).",
                       "slo_unmet", max(exc.retry_after_s, 1.0))


def count(metrics: Any, objective: Objective | None, outcome: str) -> None:
    """Count one ``outcome`` of a request with an objective in its band (``slo_requests_total{band, outcome}``)."""
    if objective is not None:
        metrics.slo_requests.labels(objective.band, outcome).inc()


def observe_answer(metrics: Any, objective: Objective | None, ttft_s: float | None, tpot_s: float | None) -> None:
    """Count whether an answered request met its TTFT and TPOT targets (measured from its arrival at the router;
    TPOT only for a streamed answer of two tokens or more)."""
    if objective is None:
        return
    if objective.ttft_s is not None and ttft_s is not None:
        count(metrics, objective, "ttft_met" if ttft_s <= objective.ttft_s else "ttft_missed")
    if objective.tpot_s is not None and tpot_s is not None:
        count(metrics, objective, "tpot_met" if tpot_s <= objective.tpot_s else "tpot_missed")
