"""Real vLLM replicas measured at a given priority and pinning, with the CPU each replica got per cell.

Starts ``--replicas`` vLLM CPU servers of the tiny model (the flags of ``llmd-kserve up --engine vllm``), each at
the priority of this process (run it as ``nice -n -15 python benchmarks/fidelity_quiet.py ...`` as root) and, with
``--pin``, bound to its own core with ``sched_setaffinity`` (all its processes; the OpenMP threads are bound by
``VLLM_CPU_OMP_THREADS_BIND`` either way). The client (this process) stays unpinned. Then, for each cell of the
sweep (``--rates`` x ``--routing``), runs ``fidelity_run.run_http`` with the same requests ``fidelity.py`` builds,
and records per replica the CPU seconds (user + system, the whole process tree: API server, engine core, worker)
and the client's, over the cell's wall time, plus the load average at its start and end.

    setsid nice -n -15 python benchmarks/fidelity_quiet.py --group-nice -15 --rates 2 4 8 \\
        --workload pressure --groups 24 --prefix-len 1024 --question-len 64 --output-len 16 \\
        --num-requests 120 --vocab 8192 --pin --json quiet.json

The simulated side is ``fidelity.py --sim sim=512,512 --profile cpu-tiny-llama`` with the same workload flags (virtual
time: no priority needed); ``fidelity_compare.py`` puts the two JSON files side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fidelity import pressure_requests, summarize, table, workload_spec  # noqa: E402
from fidelity_calib import capture  # noqa: E402
from fidelity_run import ROUTINGS, run_http  # noqa: E402

from llmd_kserve.stack.procs import free_port  # noqa: E402
from llmd_kserve.stack.vllm import ModelInfo, VllmReplica  # noqa: E402
from llmd_kserve.tiny_model import ensure_tiny_model  # noqa: E402


def tree_cpu(pid: int) -> float:
    """User + system CPU seconds of a process and all its descendants (0 for those gone)."""
    total = 0.0
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def tree_cpu_by_name(pid: int) -> dict[str, float]:
    """User + system CPU seconds of a process tree by process name (API server ``python``, ``VLLM::EngineCore``,
    ``VLLM::Worker``)."""
    out: dict[str, float] = {}
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return out
    for p in procs:
        try:
            t = p.cpu_times()
            out[p.name()] = out.get(p.name(), 0.0) + t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return out


def set_autogroup_nice(pid: int, nice: int) -> None:
    """Give the scheduler autogroup (the session) of ``pid`` this nice value. Where the kernel groups tasks by
    session (``/proc/sys/kernel/sched_autogroup_enabled`` = 1) a task's own nice value only orders it against tasks
    of the same session: against other sessions it is the autogroup's nice that counts."""
    try:
        Path(f"/proc/{pid}/autogroup").write_text(str(nice))
    except OSError as exc:
        print(f"fidelity_quiet: cannot set the autogroup nice of {pid}: {exc}", file=sys.stderr)


def pin_tree(pid: int, core: int) -> None:
    """Bind a process and its descendants (every thread) to one core."""
    root = psutil.Process(pid)
    for p in [root, *root.children(recursive=True)]:
        for t in p.threads():
            with contextlib.suppress(OSError):
                os.sched_setaffinity(t.id, {core})


def start_replicas(n: int, kv_tokens: int, python: str, log_dir: Path, pin: bool,
                   group_nice: int | None) -> list[tuple[VllmReplica, Any]]:
    model = ModelInfo.load(ensure_tiny_model())
    out = []
    for i in range(n):
        r = VllmReplica(model, free_port("127.0.0.1"), free_port("127.0.0.1"), free_port("127.0.0.1"),
                        kv_cache_tokens=kv_tokens, core=i % os.cpu_count(), seed=i)  # type: ignore[operator]
        log = open(log_dir / f"vllm-{i}.log", "w")  # noqa: SIM115
        proc = subprocess.Popen(r.argv(python), env=r.env(os.environ), stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        if group_nice is not None:
            set_autogroup_nice(proc.pid, group_nice)
        out.append((r, proc))
    deadline = time.time() + 600
    for r, proc in out:
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"fidelity_quiet: replica {r.url} exited with {proc.returncode}; see {log_dir}")
            try:
                with urllib.request.urlopen(f"{r.url}/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.time() > deadline:
                raise SystemExit(f"fidelity_quiet: replica {r.url} not healthy in 600 s")
            time.sleep(1)
    if pin:
        for r, proc in out:
            assert r.core is not None
            pin_tree(proc.pid, r.core)
    return out


def stop_replicas(reps: list[tuple[VllmReplica, Any]]) -> None:
    for _r, proc in reps:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 15)
    for _r, proc in reps:
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)


def run_cell(reps: list[tuple[VllmReplica, Any]], routing: str, requests: list, vocab: int | None) -> dict[str, Any]:
    me = os.getpid()
    cpu0 = [tree_cpu(p.pid) for _r, p in reps]
    named0 = [tree_cpu_by_name(p.pid) for _r, p in reps]
    c0, load0, t0 = psutil.Process(me).cpu_times(), os.getloadavg(), time.perf_counter()
    run = asyncio.run(run_http([r.url for r, _p in reps], routing, requests, tag=f"quiet-{routing}-", vocab=vocab))
    wall = time.perf_counter() - t0
    c1, load1 = psutil.Process(me).cpu_times(), os.getloadavg()
    cpu = [tree_cpu(p.pid) - c for (_r, p), c in zip(reps, cpu0, strict=True)]
    named = [{k: v - n0.get(k, 0.0) for k, v in tree_cpu_by_name(p.pid).items()}
             for (_r, p), n0 in zip(reps, named0, strict=True)]
    return {"target": "real", "kind": "http", "routing": routing, **run, "wall_s": wall, "replica_cpu_s": cpu,
            "replica_cpu_by_process_s": named,
            "client_cpu_s": (c1.user + c1.system) - (c0.user + c0.system), "load_start": load0[0],
            "load_end": load1[0], "nice": os.getpriority(os.PRIO_PROCESS, 0),
            "autogroup": Path(f"/proc/{me}/autogroup").read_text().strip(),
            "replica_autogroups": [Path(f"/proc/{p.pid}/autogroup").read_text().strip() for _r, p in reps]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--replicas", type=int, default=2)
    p.add_argument("--kv-cache-tokens", type=int, default=16384)
    p.add_argument("--vllm-python", default="/work/.venv-vllm/bin/python")
    p.add_argument("--pin", action="store_true", help="bind each replica's processes to its own core")
    p.add_argument("--group-nice", type=int, help="nice value of the replicas' and this process's scheduler "
                   "autogroups (run this under setsid so its session holds nothing else)")
    p.add_argument("--workload", choices=("pressure", "multi-turn"), default="pressure")
    p.add_argument("--groups", type=int)
    p.add_argument("--prefix-len", type=int)
    p.add_argument("--question-len", type=int)
    p.add_argument("--output-len", type=int)
    p.add_argument("--arrival", choices=("poisson", "constant"), default="poisson")
    p.add_argument("--rates", type=float, nargs="*", default=[2.0], help="none: only --calib")
    p.add_argument("--routing", nargs="+", choices=ROUTINGS, default=["round-robin", "affinity"])
    p.add_argument("--num-requests", type=int, default=120)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--log-dir", type=Path, default=Path("/tmp/fidelity_quiet"))
    p.add_argument("--json", type=Path, required=True, help="every cell (rows, per-request results, CPU) here")
    p.add_argument("--calib", type=Path, help="first capture the calibration set (fidelity_calib.py) here")
    p.add_argument("--calib-rounds", type=int, default=2)
    p.add_argument("--calib-concurrent", action="store_true", help="calibration rounds on all replicas at once")
    a = p.parse_args(argv)
    a.log_dir.mkdir(parents=True, exist_ok=True)
    spec = workload_spec(a.workload, a.groups, a.prefix_len, a.question_len, a.output_len)
    if a.group_nice is not None:
        set_autogroup_nice(os.getpid(), a.group_nice)
    reps = start_replicas(a.replicas, a.kv_cache_tokens, a.vllm_python, a.log_dir, a.pin, a.group_nice)
    cells: list[dict[str, Any]] = []
    try:
        if a.calib:
            cpu0, t0 = [tree_cpu(p.pid) for _r, p in reps], time.perf_counter()
            data = asyncio.run(capture([r.url for r, _p in reps], a.calib_rounds, 7, a.vocab, a.calib_concurrent))
            data["replica_cpu_s"] = [tree_cpu(p.pid) - c for (_r, p), c in zip(reps, cpu0, strict=True)]
            data["wall_s"] = time.perf_counter() - t0
            a.calib.parent.mkdir(parents=True, exist_ok=True)
            a.calib.write_text(json.dumps(data, indent=1))
            print(f"fidelity_quiet: calibration set written to {a.calib}", file=sys.stderr, flush=True)
        for rate in a.rates:
            requests = pressure_requests(a.seed, rate, a.num_requests, spec, a.arrival)
            for routing in a.routing:
                print(f"fidelity_quiet: {a.workload} {rate:g} req/s {routing}", file=sys.stderr, flush=True)
                run = run_cell(reps, routing, requests, a.vocab)
                run["rate"] = rate
                cells.append(run)
                row = summarize(run)
                busy = ", ".join(f"{c:.1f}" for c in run["replica_cpu_s"])
                print(table([row]).splitlines()[-1] + f" wall {run['wall_s']:.1f} s, replica CPU s [{busy}], client "
                      f"{run['client_cpu_s']:.1f}, load {run['load_start']:.2f}->{run['load_end']:.2f}",
                      file=sys.stderr, flush=True)
                a.json.write_text(json.dumps({"workload": a.workload, "seed": a.seed, "argv": sys.argv,
                                              "cells": cells}, indent=1))
    finally:
        stop_replicas(reps)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
