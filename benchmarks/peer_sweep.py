"""Live rate sweep per policy, ours next to vLLM's router (PyPI ``vllm-router``): the goodput frontier per scenario.

For each scenario: 4 simulated engine processes (the scenario's profiles and KV blocks) at ``--time-scale T`` (T x
slower than the fitted profile, so saturation comes at request rates this machine drives easily); for each policy
and seed, a rate sweep in ascending order that stops after the first rate missing the SLO (the matched rate always
runs). Every point starts a fresh router process and resets every engine's prefix cache, then sends the scenario's
requests for that (seed, rate) as text prompts (the same for every policy) from one load generator: ``--duration``
virtual seconds of arrivals (default the scenario's ``min_duration_s``, 8 s, the simulator's window; a 3 s window,
this script's default until 2026-11-30, ends before decode batches reach steady state and reads max rates above
the compute bound, RESULTS.md). The SLO is the scenario's, scaled by T (TTFT 1 s -> T s, TPOT 50 ms -> T x 50 ms):
a point is within it when >= 90% of requests meet both. Per point: TTFT p50/p90, SLO attainment, the engines' own
prefix-cache hit rate, the router's CPU (``/proc/<pid>/stat`` user+system over the run), the engines' and load
generator's CPU and how late the load generator sent requests after their scheduled arrival (p50/p99/max: a
generator that cannot keep up shows here).

Scenarios: shared-prefix, zipf, zipf-hot, unequal, chat, burst, agentic, rag-reasoning
(``llmd_kserve.bench.scenarios``, the simulator's engines: profiles, KV blocks, agentic's 128k context). Session
scenarios (chat, agentic) keep their request count at every rate (``bench.pacing.point_requests``: more requests
would be more sessions) and send each session's turns in arrival order, open loop, as the simulator does (checked
per point).

Raw points go to ``--out`` (JSON, rewritten after every point); ``--report a.json,b.json`` prints the tables from
saved points (later files win for the same scenario/policy/seed/rate). The peer is optional (extra ``bench``).

The first seed sweeps each policy's whole grid; every further seed starts one grid step below the first seed's max
rate (the rates below it passed there), so repeats cost only the points around the knee; a repeat that misses at
its first rate walks down the grid until a rate passes. ``--start`` lets the first seed start higher too (near the
knee the simulator or an earlier sweep found): the grid's rates below it are not run and count as met, and a miss
at it walks down the same way.

Usage: .venv/bin/python benchmarks/peer_sweep.py [--scenarios shared-prefix,zipf,unequal] [--time-scale unequal=2]
       (or --scenarios chat,burst,agentic,rag-reasoning)
       [--policies default,llm-d-optimized-baseline,...,vllm:cache_aware,vllm:power_of_two] [--seeds 0,1]
       [--rates zipf=2,4,8] [--start 'zipf=50;zipf/default=55'] [--matched zipf=4] [--duration 8] [--min-requests zipf=160] [--out out/peer_sweep/x.json]
       .venv/bin/python benchmarks/peer_sweep.py --report out/peer_sweep/a.json,out/peer_sweep/b.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

import llmd_kserve
from llmd_kserve.bench.frontier import ATTAIN, max_rate_within_slo, ratio_range, spread, sweep
from llmd_kserve.bench.loadgen import LoadConfig, run_load
from llmd_kserve.bench.pacing import point_requests, send_lateness, session_order_violations
from llmd_kserve.bench.scenarios import SCENARIOS, Scenario
from llmd_kserve.bench.sim_configs import sim_config
from llmd_kserve.bench.stats import SLO, percentile, summarize
from llmd_kserve.bench.workloads import ArrivalSpec
from llmd_kserve.config.schema import SchedulerConfig
from llmd_kserve.defaults import DEFAULT_PROFILE
from llmd_kserve.latency import load_profile
from llmd_kserve.stack.procs import Proc, free_port, spawn, terminate, wait_healthy

PROFILE_LABEL = "llmd-kserve.io/latency-profile"  # llmd_kserve.types.PROFILE_LABEL once mixed-GPU profiles land

OURS = ("round-robin", "load-only", "approx-prefix", "precise-prefix", "llm-d-optimized-baseline", "default")
PEER = ("vllm:cache_aware", "vllm:power_of_two")
# live rates (req/s) at each scenario's time scale, finer where a coarse probe found the knees (RESULTS.md)
RATES = {"shared-prefix": (10, 20, 30, 40, 50, 60, 70, 80, 90), "zipf": (15, 20, 30, 40, 50, 55, 60, 66, 72, 80),
         "zipf-hot": (20, 30, 40, 45, 50, 55, 60, 66, 72, 80),
         "unequal": (8, 12, 16, 20, 24, 28, 32, 40, 48, 56, 64),
         "chat": (20, 30, 35, 40, 50, 60, 70, 80, 100, 120), "burst": (8, 12, 16, 24, 32, 40, 48, 56, 64),
         "agentic": (2, 3, 4, 5, 6, 8, 10, 12, 16), "rag-reasoning": (8, 10, 12, 14, 16, 18, 20),
         "llmd-shared-prefix": (4, 6, 8, 9, 10, 11, 12, 16, 20)}
# the simulator table's matched loads / time scale
MATCHED = {"shared-prefix": 10, "zipf": 15, "zipf-hot": 32, "unequal": 8,
           "chat": 20, "burst": 8, "agentic": 2, "rag-reasoning": 8, "llmd-shared-prefix": 4}
# llmd-shared-prefix: 1,000 output tokens a request and a 30 s window; T = 2 keeps a point at 2-2.5 min (arrivals
# 60 s, then the last 1,000-token decodes) with the router and load generator streaming ~4,000 chunks/s at the knee
SCALE = {"shared-prefix": 4.0, "zipf": 4.0, "zipf-hot": 4.0, "unequal": 2.0, "chat": 2.0, "burst": 4.0,
         "agentic": 1.0, "rag-reasoning": 2.0, "llmd-shared-prefix": 2.0}
# unequal: 48 cold groups on slow engines; session scenarios (chat, agentic) keep this count at every rate (more
# requests would be more sessions): chat 40 sessions x 6 turns, agentic 16 sessions x 4 turns
MIN_REQUESTS = {"shared-prefix": 160, "zipf": 160, "zipf-hot": 160, "unequal": 240, "chat": 240, "burst": 160,
                "agentic": 64, "rag-reasoning": 160, "llmd-shared-prefix": 160}
HOST = "127.0.0.1"


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "llmd_kserve.cli", *args]


def start_engines(sc: Scenario, time_scale: float, log_dir: Path) -> tuple[list[Proc], list[str]]:
    """The scenario's engines; returns the processes and their URLs with ``#kv=…&replay=…`` for our router."""
    procs, urls = [], []
    for i in range(sc.engines):
        port, kv, replay = free_port(HOST), free_port(HOST), free_port(HOST)
        args = ["--host", HOST, "--port", str(port), "--kv-events-endpoint", f"tcp://{HOST}:{kv}",
                "--kv-events-replay-endpoint", f"tcp://{HOST}:{replay}", "--time-scale", str(time_scale),
                "--seed", str(i)]
        if sc.engine_profiles:
            args += ["--profile", sc.engine_profiles[i]]
        if sc.num_blocks:
            args += ["--num-blocks", str(sc.num_blocks)]
        if sc.max_model_len:
            args += ["--max-model-len", str(sc.max_model_len)]
        procs.append(spawn(f"engine-{i}", _cli("engine", *args), log_dir, f"http://{HOST}:{port}"))
        urls.append(f"http://{HOST}:{port}#kv=tcp://{HOST}:{kv}&replay=tcp://{HOST}:{replay}")
    wait_healthy(procs, 60)
    return procs, urls


TIME_TERMS = ("step_overhead_s", "weights_floor_s", "per_token_s", "attn_s", "decode_seq_s", "decode_ctx_s",
              "request_overhead_s", "request_overhead_per_token_s")


def scaled_profile(name: str, time_scale: float, out_dir: Path) -> str:
    """A copy of profile ``name`` with every time term x ``time_scale`` (what the engines at that time scale run),
    written to ``out_dir``; our router times endpoints with it, as it would with a profile fitted to them."""
    prof = load_profile(name)
    scaled = prof.model_copy(update={k: getattr(prof, k) * time_scale for k in TIME_TERMS}
                             | {"name": f"{prof.name}-x{time_scale:g}"})
    path = out_dir / f"{scaled.name}.json"
    path.write_text(scaled.model_dump_json())
    return str(path)


def scaled_config(policy: str, time_scale: float, out_dir: Path) -> str:
    """A shipped config as the simulator runs it (``bench.sim_configs.sim_config``: llm-d's baseline with the
    simulated H100's ``peakPrefillThroughput``) with every plugin parameter in seconds (``...S``: a decode-step
    budget, a TTFT margin) x ``time_scale``, like the SLO, and ``peakPrefillThroughput`` / ``time_scale``: the same
    config on engines that run ``time_scale`` x slower."""
    config = sim_config(policy)
    doc = (config.document() if isinstance(config, SchedulerConfig) else
           yaml.safe_load((Path(llmd_kserve.__file__).parent / "config" / "shipped" / f"{policy}.yaml").read_text()))
    for plugin in doc.get("plugins", []):
        params = plugin.get("parameters") or {}
        for k, v in params.items():
            if k.endswith("S") and isinstance(v, int | float):
                params[k] = v * time_scale
            elif k == "peakPrefillThroughput":
                params[k] = v / time_scale
    path = out_dir / f"{policy}-x{time_scale:g}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def endpoints_file(sc: Scenario, urls: list[str], time_scale: float, log_dir: Path) -> Path:
    """Our router's endpoints, each labelled with its engine's profile scaled by the time scale."""
    names = sc.engine_profiles or (DEFAULT_PROFILE,) * len(urls)
    items = [{"url": u, "labels": {PROFILE_LABEL: scaled_profile(n, time_scale, log_dir)}}
             for u, n in zip(urls, names, strict=True)]
    path = log_dir / "endpoints.json"
    path.write_text(json.dumps(items))
    return path


def start_router(policy: str, urls: list[str], log_dir: Path, peer_bin: str | None,
                 router_args: tuple[str, ...] = ()) -> Proc:
    port = free_port(HOST)
    if policy.startswith("vllm:"):
        assert peer_bin is not None
        argv = [peer_bin, "--host", HOST, "--port", str(port), "--worker-urls", *(u.split("#")[0] for u in urls),
                "--policy", policy[5:], "--prometheus-host", HOST, "--prometheus-port", str(free_port(HOST)),
                "--log-level", "warning"]
    else:
        argv = _cli("router", "--host", HOST, "--port", str(port), "--config", policy, "--seed", "0", *router_args)
        if "--endpoints-file" not in router_args:
            argv += ["--endpoints", ",".join(urls)]
    proc = spawn(f"router-{policy.replace(':', '-')}", argv, log_dir, f"http://{HOST}:{port}")
    wait_healthy([proc], 60)
    return proc


def reset(bases: list[str]) -> None:
    """Empty every engine's prefix cache (retried: an engine refuses while blocks are still in use)."""
    for url in bases:
        for attempt in range(50):
            try:
                with urllib.request.urlopen(urllib.request.Request(f"{url}/reset_prefix_cache", method="POST"),
                                            timeout=10):
                    break
            except urllib.error.HTTPError:
                if attempt == 49:
                    raise
                time.sleep(0.2)


def window_s(sc: Scenario, a: argparse.Namespace) -> float:
    """Virtual seconds of arrivals per point: ``--duration``, else the scenario's (the simulator's) window."""
    return sc.min_duration_s if a.duration is None else a.duration


def run_point(sc: Scenario, policy: str, seed: int, rate: float, a: argparse.Namespace, engines: list[Proc],
              urls: list[str], log_dir: Path, peer_bin: str | None) -> dict[str, Any]:
    ts = a.scale[sc.name]
    window = window_s(sc, a)
    n = point_requests(rate, ts, window, a.min_req[sc.name], sc.sessions)
    reqs = sc.build(rate, random.Random(seed * 7919 + int(rate * 1000)), n)
    if bad := session_order_violations(reqs):  # the load generator sends by arrival time, like the simulator
        raise SystemExit(f"{sc.name}: sessions {bad[:3]} would be sent out of turn order")
    bases = [u.split("#")[0] for u in urls]
    router_args: tuple[str, ...] = ()
    if a.router_profile == "scaled":
        router_args = ("--profile", scaled_profile(DEFAULT_PROFILE, ts, log_dir),
                       "--endpoints-file", str(endpoints_file(sc, urls, ts, log_dir)))
        if not policy.startswith("vllm:"):
            router_args += ("--config", scaled_config(policy, ts, log_dir))  # the last --config wins
    router = start_router(policy, urls, log_dir, peer_bin, router_args)
    try:
        reset(bases)
        r0, e0, l0 = cpu_s(router.popen.pid), [cpu_s(p.popen.pid) for p in engines], time.process_time()
        res = asyncio.run(run_load(reqs, ArrivalSpec(pattern="poisson", rate=rate),
                                   LoadConfig(target=router.url, engine_urls=bases, progress=False)))
        router_cpu = cpu_s(router.popen.pid) - r0
        engine_cpu = [cpu_s(p.popen.pid) - c for p, c in zip(engines, e0, strict=True)]
        loadgen_cpu = time.process_time() - l0
    finally:
        terminate([router])
    slo = SLO(sc.slo_ttft_s * ts, sc.slo_tpot_s * ts)
    s = summarize(res.results, res.wall_s, slo, engine_hit_rate=res.engine_hit_rate)
    # the cold-start share (each group's first request) is 20-30% of a short run and sets the plain p90 for every
    # prefix-aware policy; "warm" percentiles leave out each group's first request (by arrival order)
    group = {r.request_id: r.group for r in reqs}
    seen: set[str | None] = set()
    per_req = []
    for r in sorted(res.results, key=lambda x: x.start):
        g = group.get(r.request_id)
        per_req.append([round(r.start, 4), None if r.ttft is None else round(r.ttft, 4),
                        None if r.tpot is None else round(r.tpot, 5), g not in seen, bool(slo.met(r))])
        seen.add(g)
    warm = [x[1] for x in per_req if not x[3] and x[1] is not None]
    return {"scenario": sc.name, "policy": policy, "seed": seed, "rate": rate, "n": n, "window_s": window,
            "wall_s": res.wall_s,
            "ttft_p50": s["ttft_p50"], "ttft_p90": s["ttft_p90"], "tpot_p90": s["tpot_p90"],
            "ttft_p50_warm": percentile(warm, 50), "ttft_p90_warm": percentile(warm, 90),
            "cold_share": sum(x[3] for x in per_req) / max(1, len(per_req)), "requests": per_req,
            "attain": s["slo_attainment"], "hit": res.engine_hit_rate, "errors": s["errors"],
            "router_cpu_s": router_cpu, "engine_cpu_s": engine_cpu, "loadgen_cpu_s": loadgen_cpu,
            "time_scale": ts, "router_profile": a.router_profile, "slo": {"ttft": slo.ttft, "tpot": slo.tpot},
            "loadavg": os.getloadavg()[0], **send_lateness(reqs, res.results)}


LEGACY_WINDOW_S = 3.0
"""Points saved before ``window_s`` was recorded sent 3 virtual seconds of arrivals."""


def series_label(scenario: str, window: float) -> str:
    """A table label: the scenario and its window (points of different windows are not one sweep); session
    scenarios send a fixed number of requests at every rate, so no window applies."""
    sc = SCENARIOS.get(scenario)
    return scenario if sc is not None and sc.sessions else f"{scenario} ({window:g} s)"


def series(p: dict[str, Any]) -> str:
    """A saved point's :func:`series_label`."""
    return series_label(p["scenario"], p.get("window_s", LEGACY_WINDOW_S))


def _kv(spec: str, defaults: dict[str, Any], cast: Any) -> dict[str, Any]:
    out = dict(defaults)
    for part in (p for p in spec.split(";") if p):
        name, _, vals = part.partition("=")
        out[name] = cast(vals)
    return out


@dataclass
class _Ctx:
    """One (scenario, policy, seed) sweep's fixed inputs; ``point(rate)`` runs (or reuses) one saved point."""

    sc: Scenario
    policy: str
    seed: int
    a: argparse.Namespace
    engines: list[Proc]
    urls: list[str]
    log_dir: Path
    peer_bin: str | None
    points: list[dict[str, Any]]
    out_path: Path
    t_start: float

    def point(self, rate: float) -> dict[str, Any]:
        key = (series_label(self.sc.name, window_s(self.sc, self.a)), self.policy, self.seed, rate)
        prev = next((p for p in self.points if (series(p), p["policy"], p["seed"], p["rate"]) == key), None)
        if prev is not None:
            return prev
        p = run_point(self.sc, self.policy, self.seed, rate, self.a, self.engines, self.urls, self.log_dir,
                      self.peer_bin)
        self.points.append(p)
        self.out_path.write_text(json.dumps(self.points, indent=1))
        print(f"[{time.monotonic() - self.t_start:6.0f}s] {self.sc.name} {self.policy} seed {self.seed} @ "
              f"{rate:g}/s n={p['n']}: attain {p['attain'] or 0:.2f} TTFT p50/p90 {(p['ttft_p50'] or 0) * 1e3:.0f}/"
              f"{(p['ttft_p90'] or 0) * 1e3:.0f} ms (warm {(p['ttft_p90_warm'] or 0) * 1e3:.0f}) hit {p['hit'] or 0:.3f} errors {p['errors']} router CPU "
              f"{p['router_cpu_s'] / p['wall_s']:.2f} core, engines {sum(p['engine_cpu_s']) / p['wall_s']:.2f}, "
              f"loadgen {p['loadgen_cpu_s'] / p['wall_s']:.2f} (late p99 {(p['late_p99'] or 0) * 1e3:.0f} ms), "
              f"load {p['loadavg']:.1f}, {p['wall_s']:.0f} s", flush=True)
        return p


def first_rate(grid: list[float], knee0: float | None, start: float | None) -> float:
    """Where one seed's sweep starts on the ascending ``grid``: one grid step below the first seed's max rate
    ``knee0`` for a repeat; for the first seed the highest grid rate not above ``start`` (``--start``: the rates
    below it count as met, and a miss there walks down the grid), else the grid's lowest rate."""
    if knee0 is not None:
        return grid[max(0, grid.index(knee0) - 1)] if knee0 in grid else grid[0]
    if start is None:
        return grid[0]
    return max((r for r in grid if r <= start), default=grid[0])


def start_rate(starts: dict[str, float], scenario: str, policy: str) -> float | None:
    """The ``--start`` rate for (scenario, policy): ``scenario/policy=R`` wins over ``scenario=R``."""
    return starts.get(f"{scenario}/{policy}", starts.get(scenario))


def sweep_all(a: argparse.Namespace) -> None:
    rates = _kv(a.rates, RATES, lambda v: tuple(float(x) for x in v.split(",")))
    starts = _kv(a.start, {}, float)
    matched = _kv(a.matched, MATCHED, float)
    beside = Path(sys.executable).parent / "vllm-router"  # the venv's console script, also when not on PATH
    peer_bin = shutil.which("vllm-router") or (str(beside) if beside.exists() else None)
    policies = [p for p in a.policies.split(",") if p and (peer_bin or not p.startswith("vllm:"))]
    if len(policies) < len([p for p in a.policies.split(",") if p]):
        print("(vllm-router not installed: pip install 'llmd-kserve[bench]'; peer policies skipped)")
    out_path = Path(a.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    points: list[dict[str, Any]] = json.loads(out_path.read_text()) if out_path.exists() and a.resume else []
    t_start = time.monotonic()
    for name in a.scenarios.split(","):
        sc = SCENARIOS[name]
        with tempfile.TemporaryDirectory(prefix="peer-sweep-") as tmp:
            engines, urls = start_engines(sc, a.scale[name], Path(tmp))
            try:
                for policy in policies:
                    grid, knee0 = sorted(rates[name]), None
                    for seed in (int(s) for s in a.seeds.split(",")):
                        ctx = _Ctx(sc, policy, seed, a, engines, urls, Path(tmp), peer_bin, points, out_path, t_start)
                        # the first seed sweeps the grid (from --start); repeats start one grid step below its max
                        start = first_rate(grid, knee0, start_rate(starts, name, policy))
                        got = sweep([r for r in grid if r >= start], ctx.point, always=(matched[name],))
                        # a repeat that misses at its first rate: walk down the grid until a rate passes
                        lowest = start
                        for r in sorted((r for r in grid if matched[name] < r < start), reverse=True):
                            if (got[lowest]["attain"] or 0.0) >= ATTAIN:
                                break
                            got[r], lowest = ctx.point(r), r
                        if knee0 is None:  # the first seed's max rate
                            knee0 = max_rate_within_slo({r: p["attain"] for r, p in got.items()})
            finally:
                terminate(engines)
    report([out_path], matched)


def summarize_points(points: list[dict[str, Any]], matched: dict[str, float]) -> dict[str, dict[str, Any]]:
    """Per scenario and window (:func:`series`) and policy, over seeds (``Spread``s): TTFT p50/p90 (plain and warm)
    and hit rate at the matched rate, max rate within the SLO, router CPU per 1,000 requests (all of a seed's points)
    and in cores at the top rate run."""
    by_key = {(series(p), p["policy"], p["seed"], p["rate"]): p for p in points}
    scenario_of = {series(p): p["scenario"] for p in points}
    out: dict[str, dict[str, Any]] = {}
    for name in dict.fromkeys(k[0] for k in by_key):
        m = matched.get(scenario_of[name], MATCHED.get(scenario_of[name]))
        policies = sorted(dict.fromkeys(k[1] for k in by_key if k[0] == name),
                          key=lambda p: (OURS + PEER).index(p) if p in OURS + PEER else 99)
        for policy in policies:
            seeds = sorted({k[2] for k in by_key if k[:2] == (name, policy)})
            per_seed = [{r: p for (s, pol, sd, r), p in by_key.items() if (s, pol, sd) == (name, policy, seed)}
                        for seed in seeds]
            at_m = [p for ps in per_seed if (p := ps.get(m))]
            pts = [p for ps in per_seed for p in ps.values()]
            top = max(p["rate"] for p in pts)
            out.setdefault(name, {})[policy] = {
                "matched": m, "top": top, "seeds": seeds,
                "max_rate": spread(max_rate_within_slo({r: p["attain"] for r, p in ps.items()}) for ps in per_seed),
                **{k: spread(p[k] for p in at_m) for k in ("ttft_p50", "ttft_p90", "ttft_p90_warm", "hit")},
                "cpu_per_1k": spread(1000 * sum(p["router_cpu_s"] for p in ps.values())
                                     / sum(p["n"] for p in ps.values()) for ps in per_seed),
                "cores_top": spread(p["router_cpu_s"] / p["wall_s"] for p in pts if p["rate"] == top),
                "attain": [{r: ps[r]["attain"] for r in sorted(ps)} for ps in per_seed],
                "late_p99": [max((p.get("late_p99") or 0.0 for p in ps.values()), default=0.0) for ps in per_seed],
            }
    return out


def report(paths: list[Path], matched: dict[str, float]) -> None:
    """The markdown tables from saved points (later files win for the same scenario/policy/seed/rate)."""
    points = [p for path in paths for p in json.loads(path.read_text())]
    summary = summarize_points(points, matched)
    print("| scenario | router | policy | TTFT p50 ms | TTFT p90 ms | TTFT p90 warm ms | max rate in SLO (req/s) | "
          "hit rate | router CPU s/1k | router CPU at top rate (cores) |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, pols in summary.items():
        for policy, r in pols.items():
            router, pol = ("vllm-router", policy[5:]) if policy.startswith("vllm:") else ("llmd-kserve", policy)
            cells = [c.fmt(sc, d) if c else "-" for c, sc, d in (
                (r["ttft_p50"], 1e3, 0), (r["ttft_p90"], 1e3, 0), (r["ttft_p90_warm"], 1e3, 0), (r["max_rate"], 1, 0),
                (r["hit"], 1, 3), (r["cpu_per_1k"], 1, 2), (r["cores_top"], 1, 2))]
            print(f"| {name} @ {r['matched']:g}/s | {router} | {pol} | " + " | ".join(cells[:6])
                  + f" | {cells[6]} @ {r['top']:g}/s |")
    print("\nSLO attainment per swept rate (one row per seed):\n")
    for name, pols in summary.items():
        for policy, r in pols.items():
            for seed, att, late in zip(r["seeds"], r["attain"], r["late_p99"], strict=True):
                print(f"- {name} {policy} seed {seed}: " + ", ".join(f"{k:g}: {v or 0:.2f}" for k, v in att.items())
                      + (f" (load generator sent p99 <= {late * 1e3:.0f} ms late)" if late else ""))
    print("\nRatios, mean (worst-best over seeds):\n")
    for name, pols in summary.items():
        d = pols.get("default")
        for other in (p for p in pols if p in ("round-robin", "approx-prefix", "llm-d-optimized-baseline")
                      or p.startswith("vllm:cache_aware")):
            o = pols[other]
            if not d:
                continue
            parts = []
            for key, inv in (("max_rate", False), ("ttft_p90", True), ("ttft_p90_warm", True)):
                a, b = (o[key], d[key]) if inv else (d[key], o[key])
                if a and b and b.min > 0:
                    mean, lo, hi = ratio_range(a, b)
                    label = f"{key} {'lower' if inv else 'higher'}"
                    parts.append(f"{label} {mean:.2f}x ({lo:.2f}-{hi:.2f})")
            print(f"- {name}: default vs {other}: " + "; ".join(parts))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenarios", default="shared-prefix,zipf,unequal")
    ap.add_argument("--policies", default=",".join(OURS + PEER), help="our config names; vllm:<policy> for the peer")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--time-scale", default="", help="engines this much slower than the profile, per scenario, "
                    f"e.g. 'zipf=4;unequal=2' (defaults: {SCALE})")
    ap.add_argument("--rates", default="", help="per scenario, e.g. 'zipf=2,4,8;unequal=1,2' (req/s, live)")
    ap.add_argument("--matched", default="", help="matched-load rate per scenario, e.g. 'zipf=4'")
    ap.add_argument("--start", default="", help="the first seed's first rate above the matched one, per scenario "
                    "or scenario/policy, e.g. 'zipf=50;zipf/llm-d-optimized-baseline=40': the grid's rates below it "
                    "are not run and count as met; a miss at it walks down the grid until a rate passes")
    ap.add_argument("--duration", type=float, default=None,
                    help="virtual seconds of arrivals per point (x T live); default: the scenario's min_duration_s, "
                    "the simulator's window (8 s): long enough for decode batches to reach steady state")
    ap.add_argument("--min-requests", default="", help=f"per scenario, e.g. 'zipf=160' (defaults: {MIN_REQUESTS})")
    ap.add_argument("--out", default="out/peer_sweep/sweep.json")
    ap.add_argument("--resume", action="store_true", help="keep the points already in --out and skip them")
    ap.add_argument("--router-profile", choices=("scaled", "plain"), default="scaled",
                    help="scaled: our router times each endpoint with its engine's profile x the time scale (endpoint "
                    f"label {PROFILE_LABEL}) and its config's seconds parameters are x the time scale too; plain: "
                    "the router's built-in profile and the shipped config, unscaled")
    ap.add_argument("--report", default="", help="comma-separated saved JSON files: print the tables and exit")
    a = ap.parse_args()
    if a.report:
        report([Path(p) for p in a.report.split(",")], _kv(a.matched, MATCHED, float))
        return
    a.scale, a.min_req = _kv(a.time_scale, SCALE, float), _kv(a.min_requests, MIN_REQUESTS, int)
    sweep_all(a)


if __name__ == "__main__":
    main()
