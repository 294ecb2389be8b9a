"""The cost/SLO frontier: every deployment up to a size, simulated to its last request (for plotting GPUs against
attainment, where :func:`~llmd_kserve.plan.plan` runs only what its search needs)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from llmd_kserve.bench.stats import SLO
from llmd_kserve.defaults import DEFAULT_PROFILE
from llmd_kserve.plan.planner import check_configs
from llmd_kserve.plan.runs import Simulations
from llmd_kserve.plan.search import Deployment, Evaluation
from llmd_kserve.plan.workload import PlanWorkload


def frontier(workload: PlanWorkload, rate: float, *, max_replicas: int, slo_ttft: float | None = None,
             slo_tpot: float | None = None, attainment: float = 0.95, profile: str = DEFAULT_PROFILE,
             configs: Sequence[str] = ("default",), pd_configs: Sequence[str] = ("pd-predicted-ttft",),
             seeds: Sequence[int] = (0,), num_blocks: int | None = None,
             on_evaluation: Callable[[Evaluation], None] | None = None) -> list[Evaluation]:
    """Every aggregated count 1..``max_replicas`` of each of ``configs`` and every prefill + decode split of
    2..``max_replicas`` replicas of each of ``pd_configs`` at ``rate``, each run to its last request; in that order."""
    check_configs(configs, pd_configs)
    slo = SLO(ttft=slo_ttft if slo_ttft is not None else workload.slo_ttft,
              tpot=slo_tpot if slo_tpot is not None else workload.slo_tpot)
    sims = Simulations(workload, slo, attainment, profile=profile, seeds=seeds,
                       num_blocks=num_blocks if num_blocks is not None else workload.num_blocks, gpus_per_replica=1.0,
                       early_stop=False, on_evaluation=on_evaluation)
    deps = [Deployment(c, 0, n) for c in configs for n in range(1, max_replicas + 1)]
    deps += [Deployment(c, p, n - p) for c in pd_configs for n in range(2, max_replicas + 1) for p in range(1, n)]
    return [sims(d, rate) for d in deps]
