"""P/D over real HTTP at small scale, next to the simulator on the same requests: a cross-check of pd_compare.

2 prefill + 2 decode simulated engines (``engine_sim``, real clock) and the router run in this process; the HTTP load
generator (``bench.loadgen``) sends a RAG-like workload (4.3k-7.4k-token prompts, 64-128 out) once per config, and
:mod:`llmd_kserve.cluster_sim` runs the same requests in virtual time. On a small shared CPU box the live numbers
include the Python router's and engines' own overheads; the simulator's don't. Usage::

    .venv/bin/python benchmarks/pd_live.py [--n 40] [--rate 6] [--configs pd-never,pd-always,pd-predicted-ttft]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
from dataclasses import replace

from llmd_kserve.bench.loadgen import LoadConfig, run_load
from llmd_kserve.bench.stats import SLO, summarize
from llmd_kserve.bench.workloads import ArrivalSpec, RagSpec, assign_arrivals, build_requests
from llmd_kserve.cluster_sim import ClusterSim, SimOptions
from llmd_kserve.engine_sim.server import running_engine
from llmd_kserve.router.app import running_router
from llmd_kserve.stack.procs import free_port

ROLES = ("prefill", "prefill", "decode", "decode")
SLO_ = SLO(ttft=1.0, tpot=0.025)
KEYS = ("ttft_p50", "ttft_p90", "itl_p50", "itl_p90", "tpot_p50", "goodput_rps")


async def live(config: str, reqs, seed: int) -> dict:
    async with contextlib.AsyncExitStack() as st:
        engines = [await st.enter_async_context(running_engine(
            role=role, seed=seed + i, kv_events_endpoint=f"tcp://127.0.0.1:{free_port()}")) for i, role in enumerate(ROLES)]
        specs = [f"{e.url}#role={e.opts.role}&kv={e.kv_events_endpoint}" for e in engines]
        router = await st.enter_async_context(running_router(endpoints=specs, config=config, seed=seed))
        await asyncio.sleep(0.5)  # first scrapes and KV-event subscriptions
        run = await run_load(reqs, ArrivalSpec(pattern="poisson", rate=1.0), LoadConfig(
            target=router.url, progress=False, engine_urls=[e.url for e in engines]))
        s = run.summary(SLO_)
        body, _ = router.state.metrics.render()
        text = body.decode()
        dis = sum(float(line.split()[-1]) for line in text.splitlines()
                  if line.startswith('llmd_router_pd_requests_total{mode="disaggregated"}'))
        return {**{k: s[k] for k in KEYS}, "errors": s["errors"], "pd": dis / len(reqs)}


def simulated(config: str, reqs, seed: int) -> dict:
    out = ClusterSim(config, SimOptions(roles=ROLES, seed=seed)).run(reqs)
    s = summarize(out.results, out.wall_s, SLO_)
    return {**{k: s[k] for k in KEYS}, "errors": s["errors"], "pd": out.engine_counters["disaggregated"] / len(reqs)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--rate", type=float, default=6.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--configs", default="pd-never,pd-always,pd-predicted-ttft")
    a = ap.parse_args()
    rng = random.Random(a.seed)
    reqs = [replace(r, max_tokens=rng.randint(64, 128)) for r in build_requests(RagSpec(num_requests=a.n), rng)]
    reqs = assign_arrivals(reqs, ArrivalSpec(pattern="poisson", rate=a.rate), rng)
    print(f"rag-like, {a.n} requests at {a.rate:g}/s, 2P+2D, SLO TTFT<=1s TPOT<=25ms")
    print(f"{'config':20s} {'where':5s} " + " ".join(f"{k:>11s}" for k in (*KEYS, "errors", "pd")))
    for config in a.configs.split(","):
        for where, res in (("sim", simulated(config, reqs, a.seed)), ("live", asyncio.run(live(config, reqs, a.seed)))):
            print(f"{config:20s} {where:5s} " + " ".join(f"{res[k]:11.3f}" for k in (*KEYS, "errors", "pd")))


if __name__ == "__main__":
    main()
