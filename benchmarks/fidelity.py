"""Simulator fidelity: one workload, the same requests and arrivals, against several targets side by side.

A *target* is a list of replicas that serve one run each: OpenAI endpoints over HTTP (real vLLM, or simulated engines
in their own processes), simulated engines started here over HTTP (``--http-sim``), or simulated engine cores driven
in virtual time (``--sim``: fast and deterministic; ``--sim-shared``: the replicas time-share one accelerator, as
several vLLM servers on one GPU do). Requests are routed client-side (``round-robin``, or ``affinity``:
group ``gN`` always to replica ``N mod replicas``), so no router is in the loop and real vLLM can be measured the same
way. Each run starts from an empty prefix cache (``POST /reset_prefix_cache``; vLLM needs ``VLLM_SERVER_DEV_MODE=1``).

Workloads (built by ``llmd_kserve.bench.workloads`` with ``--seed``, so every target gets identical prompts and times):
  pressure      shared prefix under KV pressure: 48 groups x 4,096-token prefix + 256 unique tokens, 32 output tokens,
                arrivals at ``--rate`` (``--arrival poisson`` or ``constant``; ``--num-requests`` scales it;
                ``--groups``, ``--prefix-len``, ``--question-len``, ``--output-len`` reshape it, e.g. for the tiny
                model on CPU: 24 groups x 1,024 + 64, 16 output tokens)
  multi-turn    chat sessions (``bench.workloads`` ChatSpec): ``--groups`` sessions of 4 turns, system prompt
                ``--prefix-len``, user turns ``--question-len``, replies ``--output-len``; each turn resends the
                whole history (its session is its group for affinity)
  calibration   the single-request calibration set: for each prompt length a cold prompt, then the same prompt warm,
                one request in flight at a time (compare with ``../shared/calibration/calib.json``)

A P/D pair (``--pd-http NAME=P,D`` or ``--pd-sim NAME``) is a target too: every request's prefill leg goes to P
(vLLM's NixlConnector ``kv_transfer_params`` handshake, ``max_tokens: 1``), its streamed decode to D.

Columns: TTFT mean/p50/p90 (client-side), the engines' own mean TTFT over HTTP (``vllm:time_to_first_token_seconds``
sum/count deltas: no stream back to the client in it), TPOT p50, prefix-cache hit rate from the engines' own counters
(``vllm:prefix_cache_{hits,queries}_total`` deltas) and from ``usage.cached_tokens``, waiting-queue depth (mean and max
of ``vllm:num_requests_waiting`` polled every 0.25 s, or per step in virtual time), preemptions
(``vllm:num_preemptions_total`` delta). Example (2 simulated replicas of 2,195 and 6,741 blocks, virtual time)::

    python benchmarks/fidelity.py --workload pressure --sim sim=2195,6741 --routing round-robin affinity \\
        --rate 4 --num-requests 600 --out fidelity.md
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
from pathlib import Path
from typing import Any

from llmd_kserve.bench.stats import percentile
from llmd_kserve.bench.workloads import (
    ArrivalSpec,
    ChatSpec,
    RequestSpec,
    SharedPrefixSpec,
    WorkloadSpec,
    assign_arrivals,
    build_requests,
)
from llmd_kserve.bench.workloads.generators import synth_text

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fidelity_run import ROUTINGS, Target, run_target  # noqa: E402

PRESSURE = SharedPrefixSpec(num_groups=48, prompts_per_group=1, system_prompt_len=4096, question_len=256, output_len=32)
CALIB_LENGTHS = (128, 512, 1024, 2048, 4096, 8192)


def pressure_requests(seed: int, rate: float, n: int, spec: WorkloadSpec = PRESSURE,
                      arrival: str = "poisson") -> list[RequestSpec]:
    """``n`` requests of ``spec`` with Poisson (or evenly spaced) arrival times at ``rate`` (what ``bench.runner``
    builds live)."""
    rng = random.Random(seed)
    reqs = build_requests(spec, rng, n)[:n]
    return assign_arrivals(reqs, ArrivalSpec(pattern=arrival, rate=rate), rng)


def workload_spec(kind: str, groups: int | None = None, prefix_len: int | None = None,
                  question_len: int | None = None, output_len: int | None = None) -> WorkloadSpec:
    """``pressure`` (:data:`PRESSURE` with the given fields replaced) or ``multi-turn`` (4-turn chat sessions)."""
    if kind == "multi-turn":
        return ChatSpec(num_sessions=groups or 16, turns_per_session=4, system_prompt_len=prefix_len or 512,
                        user_len=question_len or 64, output_len=output_len or 16)
    fields = {"num_groups": groups, "system_prompt_len": prefix_len, "question_len": question_len,
              "output_len": output_len}
    return PRESSURE.model_copy(update={k: v for k, v in fields.items() if v is not None})


def calibration_requests(seed: int, gap_s: float = 1.5, lengths: tuple[int, ...] = CALIB_LENGTHS,
                         output_len: int = 8) -> list[RequestSpec]:
    """Per length: a cold prompt, then the same prompt again (all but its last block cached), ``gap_s`` apart."""
    rng, out = random.Random(seed), []
    for n in lengths:
        text = synth_text(rng, n)
        for kind in ("cold", "warm"):
            out.append(RequestSpec(f"calib-{n}-{kind}", len(out) * gap_s, text, output_len, n, group=f"L{n}"))
    return out


def summarize(run: dict[str, Any]) -> dict[str, Any]:
    """One table row from a run's raw record."""
    ok = [r for r in run["results"] if r["ok"]]
    ttft = [r["ttft"] for r in ok]
    c = run["counters"]
    used = [r for r in ok if r["cached_tokens"] is not None]
    return {
        "target": run["target"], "routing": run["routing"], "n": len(run["results"]), "errors": len(run["results"]) -
        len(ok), "ttft_mean": sum(ttft) / len(ttft) if ttft else None, "ttft_p50": percentile(ttft, 50),
        "ttft_p90": percentile(ttft, 90),
        "tpot_p50": percentile([r["tpot"] for r in ok if r.get("tpot") is not None], 50),
        "ttft_engine_mean": run.get("engine_ttft_mean"),
        "pd_prefill_p50": percentile([r["prefill_s"] for r in ok if r.get("prefill_s") is not None], 50),
        "pd_decode_ttft_p50": percentile([r["decode_ttft_s"] for r in ok if r.get("decode_ttft_s") is not None], 50),
        "hit_rate_engine": c["hits"] / c["queries"] if c.get("queries") else None,
        "hit_rate_usage": (sum(r["cached_tokens"] for r in used) / sum(r["prompt_tokens"] for r in used)
                           if used else None),
        "queue_mean": run["queue_mean"], "queue_max": run["queue_max"], "preemptions": c.get("preemptions"),
        "prefix_queries": c.get("queries"), "prefix_hits": c.get("hits"), "prompt_tokens": c.get("prompt_tokens"),
    }


def _f(v: Any, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def table(rows: list[dict[str, Any]]) -> str:
    """The side-by-side markdown table."""
    head = ("| target | routing | n | err | TTFT mean ms | TTFT p50 ms | TTFT p90 ms | engine TTFT mean ms | TPOT p50 ms | "
            "hit rate (engine) | hit rate (usage) | queue mean | queue max | preemptions |")
    lines = [head, "|" + "---|" * 2 + "---:|" * 12]
    for r in rows:
        ms = [_f(None if r.get(k) is None else r[k] * 1e3, ".1f")
              for k in ("ttft_mean", "ttft_p50", "ttft_p90", "ttft_engine_mean", "tpot_p50")]
        lines.append(f"| {r['target']} | {r['routing']} | {r['n']} | {r['errors']} | {' | '.join(ms)} | "
                     f"{_f(r['hit_rate_engine'], '.3f')} | {_f(r['hit_rate_usage'], '.3f')} | "
                     f"{_f(r['queue_mean'], '.2f')} | {_f(r['queue_max'], '.0f')} | {_f(r['preemptions'], '.0f')} |")
    return "\n".join(lines)


def per_request_table(runs: list[dict[str, Any]]) -> str:
    """TTFT of each request (ms), one column per run: for the calibration set."""
    cols = [f"{r['target']}/{r['routing']}" for r in runs]
    by_run = [{x["request_id"]: x for x in r["results"]} for r in runs]
    lines = ["| request | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    for rid in by_run[0]:
        cells = [_f((m.get(rid) or {}).get("ttft") and m[rid]["ttft"] * 1e3, ".1f") for m in by_run]
        lines.append(f"| {rid} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _targets(a: argparse.Namespace) -> list[Target]:
    out: list[Target] = []
    for kind, items in (("http", a.http), ("sim", a.sim), ("sim-shared", a.sim_shared), ("http-sim", a.http_sim)):
        for item in items or ():
            name, _, spec = item.partition("=")
            if not spec:
                raise SystemExit(f"fidelity: --{kind} wants NAME=...; got {item!r}")
            parts = [p for p in spec.split(",") if p]
            if kind != "http" and not all(p.isdigit() for p in parts):
                raise SystemExit(f"fidelity: --{kind} {name}: KV block counts must be integers; got {spec!r}")
            out.append(Target(name, kind, tuple(parts)))
    for item in a.pd_http or ():
        name, _, spec = item.partition("=")
        parts = spec.split(",")
        if len(parts) != 2:
            raise SystemExit(f"fidelity: --pd-http wants NAME=PREFILL_URL,DECODE_URL; got {item!r}")
        out.append(Target(name, "pd-http", tuple(parts)))
    if a.pd_sim:
        out.append(Target(a.pd_sim, "pd-http-sim", (str(a.pd_sim_blocks), str(a.pd_sim_blocks))))
    if not out:
        raise SystemExit("fidelity: give at least one target (--http, --sim, --sim-shared, --http-sim, --pd-http, --pd-sim)")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workload", choices=("pressure", "multi-turn", "calibration"), default="pressure")
    p.add_argument("--groups", type=int, help="prefix groups (pressure) or sessions (multi-turn)")
    p.add_argument("--prefix-len", type=int, help="shared prefix (pressure) or system prompt (multi-turn), tokens")
    p.add_argument("--question-len", type=int, help="unique tokens per request (pressure) or per user turn")
    p.add_argument("--output-len", type=int, help="output tokens per request")
    p.add_argument("--arrival", choices=("poisson", "constant"), default="poisson")
    p.add_argument("--http", action="append", metavar="NAME=URL[,URL...]", help="OpenAI endpoints (vLLM or sim)")
    p.add_argument("--sim", action="append", metavar="NAME=BLOCKS[,BLOCKS...]", help="simulated, virtual time")
    p.add_argument("--sim-shared", action="append", metavar="NAME=BLOCKS[,BLOCKS...]",
                   help="simulated, virtual time, all replicas time-sharing one accelerator")
    p.add_argument("--http-sim", action="append", metavar="NAME=BLOCKS[,BLOCKS...]",
                   help="simulated engines started here, over HTTP on the real clock")
    p.add_argument("--pd-http", action="append", metavar="NAME=PREFILL_URL,DECODE_URL", help="a P/D pair")
    p.add_argument("--pd-sim", metavar="NAME", help="a simulated P/D pair started here")
    p.add_argument("--pd-sim-blocks", type=int, default=6741)
    p.add_argument("--routing", nargs="+", choices=ROUTINGS, default=["round-robin", "affinity"])
    p.add_argument("--rate", type=float, default=4.0, help="arrivals per second (pressure, multi-turn)")
    p.add_argument("--num-requests", type=int, default=400)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--profile", default="h100-llama8b", help="latency profile of the simulated engines")
    p.add_argument("--time-scale", type=float, default=1.0, help="--http-sim engines' time scale")
    p.add_argument("--vocab", type=int, default=None,
                   help="fold every target's token ids into [3, VOCAB) (the tiny model: 8192)")
    p.add_argument("--out", type=Path, help="write the markdown table here")
    p.add_argument("--json", type=Path, help="write every run (rows and per-request results) here")
    a = p.parse_args(argv)
    if a.rate <= 0 or a.num_requests < 1:
        raise SystemExit("fidelity: --rate must be > 0 and --num-requests >= 1")
    shape = {"groups": a.groups, "prefix_len": a.prefix_len, "question_len": a.question_len, "output_len": a.output_len}
    bad = [k for k, v in shape.items() if v is not None and v < (0 if k == "prefix_len" else 1)]
    if bad:
        raise SystemExit(f"fidelity: --{bad[0].replace('_', '-')} must be >= {0 if bad[0] == 'prefix_len' else 1}")
    targets = _targets(a)
    if a.workload == "calibration":
        requests = calibration_requests(a.seed)
    else:
        requests = pressure_requests(a.seed, a.rate, a.num_requests, workload_spec(a.workload, **shape), a.arrival)
    runs = []
    for t in targets:
        routings = ["direct"] if t.kind.startswith("pd") else a.routing
        for routing in routings:
            print(f"fidelity: {t.name} ({t.kind}) {routing}: {len(requests)} requests", file=sys.stderr)
            runs.append(asyncio.run(run_target(t, routing, requests, a.profile, a.time_scale, a.vocab)))
    rows = [summarize(r) for r in runs]
    text = (f"workload {a.workload}, {len(requests)} requests, seed {a.seed}"
            + (f", {a.arrival} {a.rate:g} req/s, profile {a.profile}" if a.workload != "calibration" else "")
            + "\n\n" + table(rows) + "\n")
    if a.workload == "calibration":
        text += "\n" + per_request_table(runs) + "\n"
    pd_rows = [r for r in rows if r["pd_prefill_p50"] is not None]
    if pd_rows:
        text += "\n| P/D target | prefill leg p50 ms | decode leg TTFT p50 ms (KV pull + first token) |\n|---|---:|---:|\n"
        text += "".join(f"| {r['target']} | {_f(r['pd_prefill_p50'] * 1e3, '.1f')} | "
                        f"{_f(r['pd_decode_ttft_p50'] and r['pd_decode_ttft_p50'] * 1e3, '.1f')} |\n" for r in pd_rows)
    print(text)
    if a.out:
        a.out.write_text(text)
    if a.json:
        a.json.write_text(json.dumps({"workload": a.workload, "seed": a.seed, "rate": a.rate, "rows": rows,
                                      "runs": runs}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
