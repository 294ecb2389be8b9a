"""The pipeline step that plans capacity: ``capacity_plan`` searches the simulator, writes the plan's JSON and its
KServe manifests, and returns the headline numbers."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from llmd_kserve.kube.spec import parse_spec
from llmd_kserve.plan import plan, render_plan, resolve
from llmd_kserve.plan.report import to_json_text


def capacity_plan(workload: str, plan_json: str, manifests_dir: str, *, rate: float = 0.0, slo_ttft: float = 0.0,
                  slo_tpot: float = 0.0, attainment: float = 0.95, max_replicas: int = 16,
                  seeds: Sequence[int] = (0,), duration: float = 20.0,
                  configs: Sequence[str] = ("default", "round-robin"),
                  pd_configs: Sequence[str] = ("pd-predicted-ttft",), headroom: bool = True, name: str = "llmd",
                  namespace: str = "llmd") -> dict[str, float]:
    """Plan ``workload`` (a scenario name, a trace file or a bench JSON) at ``rate`` req/s (0: the rate the
    workload names) for the SLO (0: the scenario's targets); write the plan (JSON, times in seconds) to
    ``plan_json`` and its manifests under ``manifests_dir``. Returns ``gpus``, ``replicas``, ``prefill``,
    ``decode``, ``attainment``, ``ttft_p90`` and ``headroom_rate`` (0 when not measured)."""
    base = parse_spec({"name": name, "namespace": namespace}, "plan")
    wl, named = resolve(workload, duration_s=duration)
    result = plan(wl, rate or named or 0.0, slo_ttft=slo_ttft or None, slo_tpot=slo_tpot or None,
                  attainment=attainment, configs=tuple(configs), pd_configs=tuple(pd_configs),
                  max_replicas=max_replicas, seeds=tuple(int(s) for s in seeds), headroom=headroom)
    Path(plan_json).write_text(to_json_text(result))
    render_plan(result, manifests_dir, base)
    b = result.best
    return {"gpus": b.gpus, "replicas": float(b.deployment.replicas), "prefill": float(b.deployment.prefill),
            "decode": float(b.deployment.decode), "attainment": b.attainment, "ttft_p90": b.ttft_p90 or 0.0,
            "headroom_rate": result.headroom_rate or 0.0}
