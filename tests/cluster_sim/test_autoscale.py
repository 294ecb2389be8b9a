"""Replicas that start and stop in the cluster simulator: start-up delay, drain, the router's endpoint set,
GPU-hours."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from llmd_kserve.bench.workloads import ArrivalSpec, SharedPrefixSpec, make_workload
from llmd_kserve.cluster_sim import ClusterSim, SimOptions
from llmd_kserve.cluster_sim.autoscale import AutoscaleOptions, autoscale_options
from llmd_kserve.cluster_sim.scaling import RouterSignals

ROOT = Path(__file__).resolve().parents[2]
SPEC = SharedPrefixSpec(num_groups=4, prompts_per_group=15, system_prompt_len=1024, question_len=64, output_len=32)
HEAVY = SharedPrefixSpec(num_groups=60, prompts_per_group=1, system_prompt_len=4096, question_len=64, output_len=32)
"""Prompts that share nothing: one replica prefills ~8 a second."""


class ScriptedPolicy:
    """A fake policy: the replica count it wants from each time on (``{t: n}``), whatever the signals say."""

    name = "scripted"

    def __init__(self, plan: dict[float, int]) -> None:
        self.plan = sorted(plan.items())
        self.seen: list[RouterSignals] = []

    def desired(self, signals: RouterSignals) -> int:
        self.seen.append(signals)
        want = signals.replicas
        for t, n in self.plan:
            if signals.t >= t:
                want = n
        return want


def _reqs(rate: float = 20.0, seed: int = 0, spec: SharedPrefixSpec = SPEC):
    return make_workload(spec, ArrivalSpec(pattern="poisson", rate=rate), random.Random(seed))


def _sim(policy, *, initial: int, startup_s: float = 2.0, poll_s: float = 0.5, config: str = "default",
         **kw) -> ClusterSim:
    opts = AutoscaleOptions(policy, min_replicas=1, max_replicas=8, initial_replicas=initial, startup_s=startup_s,
                            poll_s=poll_s, **kw)
    sim = ClusterSim(config, SimOptions(autoscale=opts, seed=1))
    offered: list[tuple[float, tuple[str, ...]]] = []
    schedule = sim.scheduler.schedule

    def recording(llm, endpoints, exclude=()):  # the real scheduler, with the endpoint set it was offered noted
        offered.append((sim.now, tuple(e.endpoint.id for e in endpoints)))
        return schedule(llm, endpoints, exclude)

    sim.scheduler.schedule = recording  # type: ignore[method-assign]
    sim.offered = offered  # type: ignore[attr-defined]
    return sim


def test_a_new_replica_takes_requests_only_after_its_startup_delay() -> None:
    sim = _sim(ScriptedPolicy({0.5: 3}), initial=1, startup_s=1.0, config="round-robin")
    run = sim.run(_reqs())
    assert all(r.ok for r in run.results) and len(run.results) == 60
    new = [r for r in run.autoscale["replicas"] if r["asked_at"] > 0]
    assert len(new) == 2
    for rep in new:
        assert rep["ready_at"] == pytest.approx(rep["asked_at"] + 1.0)
        offered_before = [ids for t, ids in sim.offered if t < rep["ready_at"] and rep["id"] in ids]
        assert offered_before == []  # the router never saw it while it started
        served = sorted((r for r in run.results if r.endpoint == rep["id"]), key=lambda r: r.start)
        assert served, "the new replica served requests once ready"
        assert served[0].cached_tokens == 0  # it started with an empty KV cache


def test_a_stopped_replica_drains_its_requests_and_loses_none() -> None:
    long = SharedPrefixSpec(num_groups=4, prompts_per_group=10, system_prompt_len=512, question_len=32,
                            output_len=300)
    reqs = _reqs(rate=40.0, spec=long)
    sim = _sim(ScriptedPolicy({0.5: 1}), initial=3, flow_control=False)
    run = sim.run(reqs)
    assert len(run.results) == len(reqs) and all(r.ok and r.output_tokens == 300 for r in run.results)
    drained = [r for r in run.autoscale["replicas"] if r["drain_at"] is not None]
    assert len(drained) == 2
    for rep in drained:
        assert rep["removed_at"] > rep["drain_at"]  # it had requests in flight and finished them first
        late = [r for r in run.results if r.endpoint == rep["id"] and r.start + r.e2e > rep["drain_at"]]
        assert late and rep["removed_at"] == pytest.approx(max(r.start + r.e2e for r in late))
        assert not [ids for t, ids in sim.offered if t >= rep["drain_at"] and rep["id"] in ids]
        assert rep["id"] not in sim.index.endpoints  # the router forgot its KV blocks
    assert len({r.endpoint for r in run.results}) == 3


def test_a_replica_cancelled_while_starting_counts_its_start_up_in_gpu_hours() -> None:
    sim = _sim(ScriptedPolicy({0.5: 2, 1.0: 1}), initial=1, startup_s=5.0, poll_s=0.5)
    run = sim.run(_reqs())
    lives = run.autoscale["replicas"]
    assert len(lives) == 2 and lives[1]["ready_at"] is None and lives[1]["removed_at"] == pytest.approx(1.0)
    assert not [ids for _, ids in sim.offered if lives[1]["id"] in ids]
    assert run.autoscale["replica_seconds"] == pytest.approx(run.wall_s + 0.5)
    assert run.autoscale["gpu_hours"] == pytest.approx((run.wall_s + 0.5) / 3600)


def test_static_gpu_hours_are_replicas_times_the_run() -> None:
    run = ClusterSim("default", SimOptions(autoscale=autoscale_options("static", initial_replicas=3,
                                                                        max_replicas=4))).run(_reqs())
    assert run.autoscale["starts"] == 0
    assert run.autoscale["gpu_hours"] == pytest.approx(3 * run.wall_s / 3600)
    assert run.autoscale["mean_ready"] == pytest.approx(3.0)
    assert len({r.endpoint for r in run.results}) == 3


def test_the_policy_sees_the_router_signals() -> None:
    policy = ScriptedPolicy({})
    sim = _sim(policy, initial=1, poll_s=0.25)
    sim.run(_reqs(rate=100.0, spec=HEAVY))  # one replica, far too many requests: flow control queues them
    assert max(s.queued for s in policy.seen) > 0
    assert any(s.queue_depth.get(0, 0) > 0 for s in policy.seen)  # band 0: requests without a priority
    assert max(s.kv_usage for s in policy.seen) > 0
    heads = [s.ttft_headroom_s for s in policy.seen]
    assert all(h is not None for h in heads) and min(heads) < max(heads)  # it moves with the load
    misses = [s.slo_miss_ratio for s in policy.seen if s.slo_miss_ratio is not None]
    assert misses and max(misses) > 0.5  # one replica cannot answer them in time


def test_flow_control_queue_waits_count_in_ttft_and_every_request_is_served() -> None:
    reqs = _reqs(rate=100.0, spec=HEAVY)
    sim = ClusterSim("default", SimOptions(autoscale=autoscale_options("static", initial_replicas=1)))
    queued = sim.run(reqs)
    assert sim.scale is not None and sim.scale.gate is not None and sim.scale.gate.waited > len(reqs) / 2
    assert not sim.scale.gate.depth().get(0)  # all of them went on
    assert len(queued.results) == len(reqs) and all(r.ok for r in queued.results)
    by_id = {r.request_id: r for r in queued.results}
    assert all(by_id[s.request_id].start == pytest.approx(s.arrival_s) for s in reqs)  # TTFT from the arrival


def test_options_are_checked() -> None:
    with pytest.raises(ValueError):
        AutoscaleOptions(ScriptedPolicy({}), min_replicas=3, max_replicas=2)
    with pytest.raises(ValueError):
        AutoscaleOptions(ScriptedPolicy({}), min_replicas=1, max_replicas=2, initial_replicas=3)
    with pytest.raises(ValueError):
        autoscale_options("no-such-policy")
    with pytest.raises(ValueError, match="aggregated"):
        ClusterSim("default", SimOptions(roles=("prefill", "decode"),
                                         autoscale=autoscale_options("static", initial_replicas=2)))


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "llmd_kserve.cli", *args], capture_output=True, text=True,
                          timeout=300, cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin",
                                                      "LLMD_LOG_LEVEL": "ERROR"})


def test_bench_sim_autoscale_reports_gpu_hours_and_the_replica_curve(tmp_path: Path) -> None:
    out = tmp_path / "run.json"
    res = _cli("bench", "--sim", "--engines", "1", "--num-requests", "30", "--rate", "30", "--no-progress",
               "--autoscale", "headroom", "--max-replicas", "3", "--startup-s", "0.5", "--poll-s", "0.25",
               "--json", str(out))
    assert res.returncode == 0, res.stderr
    assert "autoscale headroom:" in res.stdout and "GPU-hours" in res.stdout
    run = json.loads(out.read_text())["runs"][0]
    a = run["autoscale"]
    assert a["policy"] == "headroom" and a["gpu_hours"] > 0 and a["curve"][0]["ready"] == 1
    assert run["summary"]["n"] == 30 and run["summary"]["errors"] == 0


@pytest.mark.parametrize(("args", "fragment"), [
    (("--autoscale", "headroom"), "--sim"),
    (("--sim", "--autoscale", "static", "--engines", "9", "--max-replicas", "4"), "--max-replicas"),
    (("--sim", "--autoscale", "headroom", "--prefill", "1", "--decode", "1"), "aggregated"),
])
def test_bench_autoscale_errors_are_one_line(args: tuple[str, ...], fragment: str) -> None:
    res = _cli("bench", "--num-requests", "2", *args)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("llmd-kserve bench: error: ") and fragment in lines[0], res.stderr
