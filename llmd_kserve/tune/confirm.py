"""Confirm: replay the best candidates (and the shipped ``default``) live on the local stack; the best measured wins.

Each candidate gets a fresh :class:`~llmd_kserve.stack.LocalStack` shaped as it asks (engine count, P:D split,
the scenario's KV blocks per engine) running its config, and the requests of the scenario's held-out seed go
through the real router over HTTP. The winner is the candidate with the highest objective measured live; the
runs are bench ``runs[]`` items (``scale: "live"``), so the bench report renders them.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from llmd_kserve.errors import ConfigError
from llmd_kserve.tune.scenario import Scenario, score
from llmd_kserve.tune.space import Candidate

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ConfirmResult:
    """The live runs (one per candidate, in order) and the winner (highest live objective; ties: the earlier)."""

    runs: list[dict[str, Any]]
    winner: Candidate
    candidates: list[Candidate]

    def table(self) -> list[dict[str, Any]]:
        """One row per candidate: name, engines, prefill, live objective and the headline metrics."""
        return [{"name": r["policy"], "engines": r["engines"], "prefill": r["prefill"], "value": r["value"],
                 **{k: r["summary"].get(k) for k in ("ttft_p50", "ttft_p90", "tpot_p50", "goodput_rps",
                                                     "slo_attainment", "cache_hit_rate")}}
                for r in self.runs]


def run_live(scenario: Scenario, candidate: Candidate, seed: int, *, time_scale: float = 1.0,
             startup_timeout: float = 60.0) -> dict[str, Any]:
    """One live run of ``candidate`` on a fresh local stack: a bench ``runs[]`` item with ``value`` added."""
    from llmd_kserve.bench.loadgen import LoadConfig, run_load
    from llmd_kserve.bench.report import run_entry_from
    from llmd_kserve.stack import LocalStack

    engine_args = ("--num-blocks", str(scenario.num_blocks)) if scenario.num_blocks else ()
    shape = ({"prefill": candidate.prefill, "decode": candidate.decode} if candidate.prefill
             else {"engines": candidate.engines})
    with tempfile.TemporaryDirectory(prefix="llmd-confirm-") as tmp:
        path = Path(tmp) / f"{candidate.name}.yaml"
        path.write_text(yaml.safe_dump(candidate.config, sort_keys=False))
        with LocalStack(**shape, config=str(path), prometheus=False, engine_args=engine_args, seed=seed,
                        time_scale=time_scale, startup_timeout=startup_timeout) as stack:
            load = LoadConfig(target=stack.router_url, engine_urls=stack.engine_base_urls, progress=False)
            result = asyncio.run(run_load(scenario.requests(seed), scenario.arrival, load,
                                          run_tag=f"{candidate.name}-"))
    entry = run_entry_from(result, candidate.name, scenario.slo, scale="live", engines=candidate.engines,
                           prefill=candidate.prefill, seed=seed)
    entry["value"] = score(entry["summary"], candidate.gpus(scenario), scenario.objective)
    log.info("confirm %s: %s = %.3f", candidate.name, scenario.objective, entry["value"])
    return entry


def confirm(scenario: Scenario, candidates: Sequence[Candidate], *, seed: int | None = None,
            target: str = "local", time_scale: float = 1.0) -> ConfirmResult:
    """Replay ``candidates`` live on the held-out seed (``scenario.holdout_seed`` unless given); pick the winner.

    ``target`` must be ``"local"``: on a cluster, apply the exported ConfigMap and run the benchmark pipeline."""
    if target != "local":
        raise ConfigError("confirm replays candidates on the local stack only (target 'local'); on a cluster, "
                          "apply the exported ConfigMap and run the benchmark pipeline against it", "target")
    if not candidates:
        raise ConfigError("nothing to confirm: no candidates", "candidates")
    seed = scenario.holdout_seed if seed is None else seed
    runs = [run_live(scenario, c, seed, time_scale=time_scale) for c in candidates]
    best = max(range(len(runs)), key=lambda i: (runs[i]["value"], -i))
    return ConfirmResult(runs, candidates[best], list(candidates))
