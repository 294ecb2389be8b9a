"""A tuning scenario: the workload, the cluster it runs on, the SLO and the objective a candidate is scored by."""

from __future__ import annotations

import random
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from llmd_kserve.bench.stats import SLO
from llmd_kserve.bench.workloads import WORKLOAD_ADAPTER, ArrivalSpec, RequestSpec, WorkloadSpec, make_workload

Objective = Literal["goodput_per_gpu", "goodput", "slo_attainment", "neg_ttft_p90"]
OBJECTIVES: tuple[str, ...] = ("goodput_per_gpu", "goodput", "slo_attainment", "neg_ttft_p90")


class Scenario(BaseModel):
    """What a candidate is scored on: requests built from ``workload`` with seed ``s`` for each of ``seeds``, Poisson
    at ``rate`` req/s, on engines of ``num_blocks`` KV blocks each; higher ``objective`` is better.

    ``engines`` is the baseline cluster (the shipped ``default`` config runs on it); the search may choose any
    count in ``[min_engines, max_engines]`` and, with ``max_prefill > 0``, split it into prefill and decode pools."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    workload: dict[str, Any] = Field(default_factory=lambda: {
        "kind": "shared-prefix", "num_groups": 24, "prompts_per_group": 12, "system_prompt_len": 3000,
        "question_len": 200, "output_len": 64})
    num_requests: int = Field(240, ge=1)
    rate: float = Field(12.0, gt=0)
    num_blocks: int | None = Field(2048, ge=16)
    """KV blocks per engine (None: the profile's full cache)."""
    engines: int = Field(4, ge=1)
    min_engines: int = Field(2, ge=1)
    max_engines: int = Field(4, ge=1)
    max_prefill: int = Field(0, ge=0)
    """Largest prefill pool the search may try (0: aggregated engines only)."""
    gpus_per_engine: float = Field(1.0, gt=0)
    slo_ttft: float | None = Field(0.25, gt=0)
    slo_tpot: float | None = Field(0.05, gt=0)
    objective: Objective = "goodput_per_gpu"
    seeds: tuple[int, ...] = (0,)
    """Workload seeds a candidate is scored on in the search (mean over them)."""
    holdout_seed: int = 1
    """The seed `confirm` and the final comparison use; never seen by the search."""

    @model_validator(mode="after")
    def _check(self) -> Scenario:
        WORKLOAD_ADAPTER.validate_python(self.workload)
        if not self.min_engines <= self.max_engines:
            raise ValueError("min_engines must be <= max_engines")
        if self.max_prefill >= self.max_engines:
            raise ValueError("max_prefill must leave at least one decode engine (< max_engines)")
        if not self.seeds:
            raise ValueError("seeds must not be empty")
        return self

    @property
    def slo(self) -> SLO:
        return SLO(ttft=self.slo_ttft, tpot=self.slo_tpot)

    @property
    def workload_spec(self) -> WorkloadSpec:
        return WORKLOAD_ADAPTER.validate_python(self.workload)

    @property
    def arrival(self) -> ArrivalSpec:
        return ArrivalSpec(pattern="poisson", rate=self.rate)

    def requests(self, seed: int) -> list[RequestSpec]:
        """The scenario's requests for one workload seed (prompts and Poisson arrival times)."""
        return make_workload(self.workload_spec, self.arrival, random.Random(seed), self.num_requests)


def score(summary: dict[str, Any], gpus: float, objective: Objective) -> float:
    """The objective's value for one run's bench summary (``stats.summarize``) on ``gpus`` GPUs; higher is better."""
    if objective == "goodput_per_gpu":
        return float(summary.get("goodput_rps") or 0.0) / gpus
    if objective == "goodput":
        return float(summary.get("goodput_rps") or 0.0)
    if objective == "slo_attainment":
        return float(summary.get("slo_attainment") or 0.0)
    p90 = summary.get("ttft_p90")
    return -float(p90) if p90 is not None else float("-inf")
