"""Soak (issue 14; not in CI): steady streaming load through a governed router for 10 minutes; the router's memory
and scheduling-decision latency must stay flat.

Closed loop: ``--concurrency`` clients each send streaming requests back to back with their tenant's key (four
tenants, audit trail fsync'd per record, guardrails and flow control on). Every ``--sample`` seconds: the router's
RSS, the mean decision latency over the interval (``llmd_router_scheduling_seconds`` sum/count deltas), requests
finished and errors. Reports the samples and first-vs-last comparisons (after one warm-up sample).

    PYTHONPATH=. .venv/bin/python benchmarks/soak.py [--minutes 10] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.governance_load import _router_args, one, proc_stats, stack
from llmd_kserve.governance.audit import verify
from llmd_kserve.governance.keys import add_key


def _sched(text: str) -> tuple[float, float]:
    s = c = 0.0
    for fam in text_string_to_metric_families(text):
        for x in fam.samples:
            if x.name == "llmd_router_scheduling_seconds_sum":
                s += x.value
            elif x.name == "llmd_router_scheduling_seconds_count":
                c += x.value
    return s, c


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--engines", type=int, default=4)
    ap.add_argument("--per-endpoint", type=int, default=32)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--sample", type=float, default=30.0)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="llmd-soak-") as d:
        tmp = Path(d)
        keys = [add_key(tmp / "keys.yaml", tenant=f"t{i}")[0] for i in range(4)]
        with stack(tmp, a.engines, _router_args(tmp, a.per_endpoint, "every"), 1.0) as r:
            samples: list[dict] = []
            counts = {"ok": 0, "errors": 0}

            async def client(i: int, s: aiohttp.ClientSession, stop: float) -> None:
                rng = random.Random(a.seed + i)
                while time.monotonic() < stop:
                    prompt = f"tenant {i % 4} session {rng.randrange(50)} " + "lorem ipsum " * rng.randrange(5, 80)
                    what, _ = await one(s, r.url, keys[i % 4], prompt, a.max_tokens)
                    counts["ok" if what == "ok" else "errors"] += 1

            async def sampler(s: aiohttp.ClientSession, stop: float) -> None:
                prev = None
                while time.monotonic() < stop:
                    await asyncio.sleep(a.sample)
                    async with s.get(r.url + "/metrics", headers={"Authorization": f"Bearer {keys[0]}"}) as m:
                        cur = _sched(await m.text())
                    rss, cpu = proc_stats(r.p.pid)
                    if prev is not None:
                        n = cur[1] - prev[1]
                        samples.append({"t_s": round(len(samples) * a.sample + a.sample), "rss_mb": round(rss, 1),
                                        "cpu_s": round(cpu, 1), "decisions": int(n),
                                        "decision_mean_ms": round((cur[0] - prev[0]) / n * 1e3, 4) if n else None,
                                        **counts})
                        print(json.dumps(samples[-1]), file=sys.stderr, flush=True)
                    prev = cur

            async def go() -> None:
                stop = time.monotonic() + a.minutes * 60
                async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                                 timeout=aiohttp.ClientTimeout(total=120)) as s:
                    await asyncio.gather(sampler(s, stop), *(client(i, s, stop) for i in range(a.concurrency)))

            asyncio.run(go())
        rep = verify([tmp / "audit.jsonl"])
    warm = samples[1:] if len(samples) > 2 else samples
    first, last = warm[0], warm[-1]
    out = {"minutes": a.minutes, "concurrency": a.concurrency, "engines": a.engines, "machine": f"{os.cpu_count()} cores",
           "requests_ok": counts["ok"], "errors": counts["errors"], "audit_ok": rep.ok, "audit_records": rep.records,
           "rss_mb_first_last": [first["rss_mb"], last["rss_mb"]],
           "decision_mean_ms_first_last": [first["decision_mean_ms"], last["decision_mean_ms"]],
           "rss_mb_max": max(x["rss_mb"] for x in warm), "samples": samples}
    print(json.dumps(out, indent=1))
    return 0 if counts["errors"] == 0 and rep.ok else 1


if __name__ == "__main__":
    sys.exit(main())
