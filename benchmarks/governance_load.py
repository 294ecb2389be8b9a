"""Issue 14 load runs through a governed router (virtual keys, guardrails, flow control, fsync'd audit trail).

``streams``: N concurrent streaming clients at once (one connection each), zero errors expected; reports TTFT,
the router's RSS/CPU, and that the audit chain verifies. ``fairness``: tenant B alone at half its share of the
pool, then again while tenant A floods at 10x its share (open-loop Poisson arrivals, seeded; A's
client runs in a process of its own); reports B's p90 TTFT
in both phases and their ratio (target <= 1.2). Engines are ``llmd-kserve engine`` processes (simulated vLLM).

``billing``: one engine, keys with budgets and tokens per minute; closed-loop clients send a seeded mix of streamed
(read whole or cut mid-way), non-streamed and chat requests, some sharing a client ``x-request-id``; then parallel
bursts at a small budget and a small TPM. Compares the tokens billed (router metrics and audit ``done`` records)
with the tokens the engine produced (its ``vllm:prompt_tokens_total`` + ``vllm:generation_tokens_total``), and
the bursts' usage with their limits. Tokens an engine generates after a client left and before it sees the
disconnect never reach the router, so they cannot be billed: ``unbilled_tokens`` counts them.

    PYTHONPATH=. .venv/bin/python benchmarks/governance_load.py streams --streams 1000
    PYTHONPATH=. .venv/bin/python benchmarks/governance_load.py fairness --seconds 20
    PYTHONPATH=. .venv/bin/python benchmarks/governance_load.py billing --requests 160
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import random
import re
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp

from llmd_kserve.bench.stats import percentile
from llmd_kserve.governance.audit import verify
from llmd_kserve.governance.keys import add_key
from llmd_kserve.governance.limits import DEFAULT_MAX_TOKENS

_URL = re.compile(r"(http://127\.0\.0\.1:\d+)")


class Proc:
    def __init__(self, argv: list[str], log: Path, ready: str) -> None:
        self.f = open(log, "wb")  # noqa: SIM115
        self.p = subprocess.Popen(argv, stdout=self.f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                  env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
        self.log, self.url = log, ""
        for _ in range(1200):
            text = log.read_text(errors="replace")
            line = next((ln for ln in text.splitlines() if ready in ln), "")
            if m := _URL.search(line):
                self.url = m.group(1)
                return
            if self.p.poll() is not None:
                raise RuntimeError(text)
            time.sleep(0.05)
        raise TimeoutError(log.read_text())

    def stop(self) -> None:
        self.p.terminate()
        try:
            self.p.wait(20)
        except subprocess.TimeoutExpired:
            self.p.kill()
        self.f.close()


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "llmd_kserve.cli", *args]


@contextlib.contextmanager
def stack(tmp: Path, engines: int, router_args: list[str], time_scale: float) -> Iterator[Proc]:
    procs: list[Proc] = []
    try:
        for i in range(engines):
            procs.append(Proc(_cli("engine", "--port", "0", "--time-scale", str(time_scale), "--seed", str(i)),
                              tmp / f"e{i}.log", "engine ready"))
        r = Proc(_cli("router", "--port", "0", "--endpoints", ",".join(p.url for p in procs), *router_args),
                 tmp / "router.log", "listening on")
        procs.append(r)
        yield r
    finally:
        for p in reversed(procs):
            p.stop()


def proc_stats(pid: int) -> tuple[float, float]:
    """(RSS MiB, CPU seconds) of a process."""
    rss = next(int(ln.split()[1]) / 1024 for ln in Path(f"/proc/{pid}/status").read_text().splitlines()
               if ln.startswith("VmRSS:"))
    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return rss, (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


async def one(s: aiohttp.ClientSession, url: str, key: str, prompt: str, max_tokens: int) -> tuple[str, float]:
    t0, ttft = time.perf_counter(), -1.0
    body = {"model": "llama-8b-shape", "prompt": prompt, "max_tokens": max_tokens, "ignore_eos": True,
            "stream": True}
    try:
        async with s.post(url + "/v1/completions", json=body, headers={"Authorization": f"Bearer {key}"}) as r:
            if r.status != 200:
                await r.read()
                return f"http_{r.status}", ttft
            error = False
            async for line in r.content:
                if line.startswith(b"data: {") and ttft < 0:
                    ttft = time.perf_counter() - t0
                error |= line.startswith(b'data: {"error"')
            return ("stream_error" if error else "ok"), ttft
    except (TimeoutError, aiohttp.ClientError) as exc:
        return type(exc).__name__, ttft


def q(xs: list[float], p: float) -> float | None:
    """The ``p``-quantile (0-1) of ``xs`` in seconds, rounded; None for none."""
    v = percentile(xs, p * 100)
    return None if v is None else round(v, 4)


def _keys(tmp: Path) -> dict[str, str]:
    return {t: add_key(tmp / "keys.yaml", tenant=t)[0] for t in ("load", "a", "b")}


def _router_args(tmp: Path, per_endpoint: int, fsync: str, ttl: float = 30.0, band: int = 4096) -> list[str]:
    (tmp / "g.yaml").write_text("guardrails:\n  - type: blocklist\n    keywords: [forbidden-topic]\n"
                                "  - type: pii-redaction\n")
    return ["--keys-file", str(tmp / "keys.yaml"), "--guardrails-file", str(tmp / "g.yaml"), "--audit-file",
            str(tmp / "audit.jsonl"), "--audit-fsync", fsync,
            *(["--flow-per-endpoint", str(per_endpoint), "--flow-band-capacity", str(band), "--flow-ttl", str(ttl)]
              if per_endpoint else [])]


def run_streams(a: argparse.Namespace, tmp: Path) -> dict:
    keys = _keys(tmp)
    with stack(tmp, a.engines, _router_args(tmp, a.per_endpoint, a.fsync), a.time_scale) as r:
        rng = random.Random(a.seed)
        prefixes = [" ".join(f"w{rng.randrange(5000)}" for _ in range(200))[:1200] for _ in range(16)]

        async def go() -> tuple[list[tuple[str, float]], float]:
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                             timeout=aiohttp.ClientTimeout(total=a.timeout)) as s:
                t0 = time.perf_counter()
                res = await asyncio.gather(*(one(s, r.url, keys["load"], f"{prefixes[i % 16]} q{i}", a.max_tokens)
                                             for i in range(a.streams)))
                return res, time.perf_counter() - t0

        before = proc_stats(r.p.pid)
        res, wall = asyncio.run(go())
        after = proc_stats(r.p.pid)
    outcomes: dict[str, int] = {}
    for w, _ in res:
        outcomes[w] = outcomes.get(w, 0) + 1
    ttft = [t for w, t in res if w == "ok"]
    rep = verify([tmp / "audit.jsonl"])
    return {"streams": a.streams, "engines": a.engines, "flow_slots": a.engines * a.per_endpoint,
            "audit_fsync": a.fsync, "outcomes": outcomes, "ttft_p50_s": q(ttft, 0.5), "ttft_p99_s": q(ttft, 0.99),
            "wall_s": round(wall, 2), "router_rss_mb": [round(before[0], 1), round(after[0], 1)],
            "router_cpu_s": round(after[1] - before[1], 2),
            "audit": {"ok": rep.ok, "records": rep.records, "errors": rep.errors[:3]}}


async def _poisson(s: aiohttp.ClientSession, url: str, key: str, rate: float, seconds: float, rng: random.Random,
                   tag: str, max_tokens: int, out: list[tuple[str, float]]) -> None:
    tasks, t_end, n = [], time.perf_counter() + seconds, 0

    async def rec(prompt: str) -> None:
        out.append(await one(s, url, key, prompt, max_tokens))

    while time.perf_counter() < t_end:
        n += 1
        tasks.append(asyncio.ensure_future(rec(f"{tag} request {n} {rng.random()} " + "lorem ipsum " * 40)))
        await asyncio.sleep(rng.expovariate(rate))
    await asyncio.gather(*tasks)


def _flood(url: str, key: str, rate: float, seconds: float, seed: int, max_tokens: int) -> list[tuple[str, float]]:
    out: list[tuple[str, float]] = []

    async def go() -> None:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                         timeout=aiohttp.ClientTimeout(total=120)) as s:
            await _poisson(s, url, key, rate, seconds, random.Random(seed), "a", max_tokens, out)

    asyncio.run(go())
    return out


def run_fairness(a: argparse.Namespace, tmp: Path) -> dict:
    keys = _keys(tmp)
    slots = a.engines * (a.per_endpoint or a.share_slots)
    with stack(tmp, a.engines, _router_args(tmp, a.per_endpoint, a.fsync, a.flow_ttl, a.band_capacity), a.time_scale) as r:
        async def phase(flood: bool, rate_b: float, rate_a: float) -> tuple[list, list]:
            b: list[tuple[str, float]] = []
            fa: list[tuple[str, float]] = []
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                             timeout=aiohttp.ClientTimeout(total=120)) as s:
                flooder = None
                if flood:  # A in a process of its own: its load must not slow the loop that times B
                    flooder = multiprocessing.get_context("spawn").Pool(1)
                    fut = flooder.apply_async(_flood, (r.url, keys["a"], rate_a, a.seconds, a.seed + 1, a.max_tokens))
                await _poisson(s, r.url, keys["b"], rate_b, a.seconds, random.Random(a.seed), "b", a.max_tokens, b)
                if flooder is not None:
                    fa = fut.get(300)
                    flooder.close()
                    flooder.join()
            return b, fa

        async def calibrate() -> float:  # one request's service time, unloaded
            async with aiohttp.ClientSession() as s:
                ts = []
                for i in range(5):
                    t0 = time.perf_counter()
                    await one(s, r.url, keys["b"], f"warm {i} " + "lorem ipsum " * 40, a.max_tokens)
                    ts.append(time.perf_counter() - t0)
            return sorted(ts)[2]

        service_s = asyncio.run(calibrate())
        share = slots / service_s / 2  # requests/s each of two tenants may send when the pool is saturated
        rate_b, rate_a = a.b_of_share * share, 10 * share
        solo: list[tuple[str, float]] = []
        mixed: list[tuple[str, float]] = []
        flood: list[tuple[str, float]] = []
        for _ in range(a.rounds):  # alternate the phases: a shared machine's drifting load hits both alike
            b, _ = asyncio.run(phase(False, rate_b, rate_a))
            solo += b
            time.sleep(a.window + 1)  # A and B idle: fresh fair-share window
            b, fa = asyncio.run(phase(True, rate_b, rate_a))
            mixed += b
            flood += fa
            time.sleep(a.window + 1)
    b_solo = [t for w, t in solo if w == "ok"]
    b_mixed = [t for w, t in mixed if w == "ok"]
    outcomes_a: dict[str, int] = {}
    for w, _ in flood:
        outcomes_a[w] = outcomes_a.get(w, 0) + 1
    p90s, p90m = q(b_solo, 0.9), q(b_mixed, 0.9)
    return {"engines": a.engines, "flow_slots": slots, "service_s": round(service_s, 3),
            "share_rps": round(share, 2), "rate_b_rps": round(rate_b, 2), "rate_a_rps": round(rate_a, 2),
            "seconds_per_phase": a.seconds, "rounds": a.rounds, "b_solo": {"n": len(solo), "ok": len(b_solo), "ttft_p50_s": q(b_solo, 0.5),
                                                       "ttft_p90_s": p90s},
            "b_with_a_flooding": {"n": len(mixed), "ok": len(b_mixed), "ttft_p50_s": q(b_mixed, 0.5),
                                  "ttft_p90_s": p90m},
            "a_outcomes": outcomes_a, "p90_ratio": round(p90m / p90s, 3) if p90s and p90m else None}


async def _billed_request(s: aiohttp.ClientSession, url: str, key: str, kind: str, stream: bool, cut: int,
                          max_tokens: int, rid: str | None, rng: random.Random) -> str:
    """One request of the billing mix: ``ok``, ``cut`` (dropped after ``cut`` content events) or ``http_<status>``."""
    text = " ".join(f"w{rng.randrange(9000)}" for _ in range(rng.randrange(4, 60)))
    body: dict = {"model": "llama-8b-shape", "max_tokens": max_tokens, "stream": stream,
                  "ignore_eos": rng.random() < 0.5}
    if kind == "chat":
        body["messages"] = [{"role": "user", "content": text}]
    else:
        body["prompt"] = text
    headers = {"Authorization": f"Bearer {key}", **({"x-request-id": rid} if rid else {})}
    async with s.post(f"{url}/v1/{'chat/completions' if kind == 'chat' else 'completions'}", json=body,
                      headers=headers) as r:
        if r.status != 200:
            await r.read()
            return f"http_{r.status}"
        if not stream:
            await r.read()
            return "ok"
        seen = 0
        async for line in r.content:
            if line.startswith(b"data: {") and (b'"text":"' in line or b'"content":"' in line):
                seen += 1
                if cut and seen >= cut:
                    r.close()  # drop the connection mid-stream
                    return "cut"
        return "ok"


def _sum_metric(text: str, name: str, **labels: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families
    return sum(x.value for fam in text_string_to_metric_families(text) for x in fam.samples
               if x.name == name and all(x.labels.get(k) == v for k, v in labels.items()))


async def _get(s: aiohttp.ClientSession, url: str, key: str | None = None) -> str:
    async with s.get(url, headers={"Authorization": f"Bearer {key}"} if key else {}) as r:
        return await r.text()


def run_billing(a: argparse.Namespace, tmp: Path) -> dict:
    kf = tmp / "keys.yaml"
    keys = {"a": add_key(kf, tenant="a", tpm=10**6, token_budget=10**8)[0],
            "b": add_key(kf, tenant="b", token_budget=10**8)[0],
            "capped": add_key(kf, tenant="capped", token_budget=a.budget)[0],
            "tpm": add_key(kf, tenant="tpm", tpm=a.tpm)[0]}
    router_args = ["--keys-file", str(kf), "--audit-file", str(tmp / "audit.jsonl")]
    rng = random.Random(a.seed)
    kinds = {"stream": 0, "cut": 0, "whole": 0, "chat": 0, "dup_id": 0}
    with stack(tmp, 1, router_args, a.time_scale) as r:
        engine_url = _URL.findall((tmp / "e0.log").read_text())[0]

        async def go() -> dict:
            outcomes: dict[str, int] = {}
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                             timeout=aiohttp.ClientTimeout(total=a.timeout)) as s:
                jobs = []
                for i in range(a.requests):
                    kind = "chat" if rng.random() < 0.2 else "completion"
                    roll = rng.random()
                    stream, cut = roll < 0.7, 0
                    mt = rng.randrange(8, 49)
                    if stream and roll < 0.25:
                        cut = rng.randrange(1, mt)
                    rid = f"dup-{i % 3}" if rng.random() < 0.1 else None
                    kinds["cut" if cut else "stream" if stream else "whole"] += 1
                    kinds["chat"] += kind == "chat"
                    kinds["dup_id"] += rid is not None
                    jobs.append((keys["ab"[i % 2]], kind, stream, cut, mt, rid, random.Random(rng.random())))
                queue = list(reversed(jobs))

                async def worker() -> None:
                    while queue:
                        key, kind, stream, cut, mt, rid, r_ = queue.pop()
                        w = await _billed_request(s, r.url, key, kind, stream, cut, mt, rid, r_)
                        outcomes[w] = outcomes.get(w, 0) + 1

                await asyncio.gather(*(worker() for _ in range(a.concurrency)))
                bursts = {}
                for tenant, limit in (("capped", a.budget), ("tpm", a.tpm)):
                    t0 = time.perf_counter()
                    got = await asyncio.gather(*(_billed_request(s, r.url, keys[tenant], "completion", True, 0,
                                                                 a.burst_max_tokens, None, random.Random(j))
                                                 for j in range(a.burst)))
                    bursts[tenant] = {"limit": limit, "sent": a.burst, "ok": got.count("ok"),
                                      "refused_429": got.count("http_429"), "seconds": time.perf_counter() - t0}
                await asyncio.sleep(1.0)  # the last cut streams are settled
                return {"outcomes": outcomes, "bursts": bursts,
                        "router": await _get(s, r.url + "/metrics", keys["a"]),
                        "engine": await _get(s, engine_url + "/metrics")}

        res = asyncio.run(go())
    rm, em = res["router"], res["engine"]
    done = [json.loads(x) for x in (tmp / "audit.jsonl").read_text().splitlines() if '"event":"done"' in x]
    produced = {k: int(_sum_metric(em, f"vllm:{k}_tokens_total")) for k in ("prompt", "generation")}
    billed_metrics = {k: int(_sum_metric(rm, "llmd_gateway_tokens_total", kind=k)) for k in ("prompt", "completion")}
    billed_audit = {"prompt": sum(d["prompt_tokens"] for d in done),
                    "completion": sum(d["completion_tokens"] for d in done)}
    one_request = max(d["prompt_tokens"] + d["completion_tokens"] for d in done)
    gap = produced["prompt"] + produced["generation"] - billed_metrics["prompt"] - billed_metrics["completion"]
    for tenant, b in res["bursts"].items():
        used = sum(d["prompt_tokens"] + d["completion_tokens"] for d in done if d["tenant"] == tenant)
        b["used_tokens"] = used
        b["seconds"] = round(b["seconds"], 2)
        if tenant == "capped":
            b["overshoot_tokens"] = max(0, used - a.budget)
        else:  # a bucket of tpm plus what refilled while the burst ran
            b["allowance_tokens"] = round(a.tpm + a.tpm / 60 * b["seconds"])
            b["overshoot_tokens"] = max(0, used - b["allowance_tokens"])
    sources: dict[str, int] = {}
    for d in done:
        sources[d["usage_source"]] = sources.get(d["usage_source"], 0) + 1
    cuts = sources.get("estimate", 0)  # streams that ended without the engine's usage
    return {"workload": {"requests": a.requests, "concurrency": a.concurrency, "mix": kinds, "max_tokens": "8-48",
                         "engine_time_scale": a.time_scale, "burst": a.burst, "burst_max_tokens": a.burst_max_tokens,
                         "chat_default_reserve": DEFAULT_MAX_TOKENS["chat"]},
            "outcomes": res["outcomes"], "usage_source": sources,
            "router_499": int(_sum_metric(rm, "llmd_router_requests_total", status="499")),
            "produced": produced, "billed_metrics": billed_metrics, "billed_audit": billed_audit,
            "unbilled_tokens": gap, "unbilled_per_estimated_request": round(gap / cuts, 2) if cuts else None,
            "one_request_tokens": one_request, "within_one_request": 0 <= gap <= one_request,
            "bursts": res["bursts"], "audit_ok": verify([tmp / "audit.jsonl"]).ok}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mode", choices=["streams", "fairness", "billing"])
    ap.add_argument("--streams", type=int, default=1000)
    ap.add_argument("--engines", type=int, default=4)
    ap.add_argument("--per-endpoint", type=int, default=None, help="flow-control slots per engine (0: no flow control)")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--time-scale", type=float, default=1.0)
    ap.add_argument("--fsync", choices=["every", "interval"], default="every")
    ap.add_argument("--seconds", type=float, default=20.0, help="fairness: seconds per phase")
    ap.add_argument("--b-of-share", type=float, default=0.5, help="fairness: B's rate as a fraction of its share")
    ap.add_argument("--window", type=float, default=5.0)
    ap.add_argument("--share-slots", type=int, default=4, help="fairness without flow control: slots per engine "
                    "the share is computed from")
    ap.add_argument("--rounds", type=int, default=3, help="fairness: solo/flood phase pairs, alternated")
    ap.add_argument("--band-capacity", type=int, default=64, help="fairness: queued requests per band")
    ap.add_argument("--flow-ttl", type=float, default=5.0, help="fairness: queue TTL (A's excess is dropped after it)")
    ap.add_argument("--timeout", type=float, default=300.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--requests", type=int, default=160, help="billing: requests in the mixed phase")
    ap.add_argument("--concurrency", type=int, default=16, help="billing: closed-loop clients")
    ap.add_argument("--budget", type=int, default=2000, help="billing: token budget of the burst tenant")
    ap.add_argument("--tpm", type=int, default=1500, help="billing: tokens per minute of the burst tenant")
    ap.add_argument("--burst", type=int, default=16, help="billing: parallel requests per burst")
    ap.add_argument("--burst-max-tokens", type=int, default=150)
    a = ap.parse_args()
    if a.per_endpoint is None:
        a.per_endpoint = 512 if a.mode == "streams" else 4
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    with tempfile.TemporaryDirectory(prefix="llmd-gov-") as d:
        out = {"streams": run_streams, "fairness": run_fairness, "billing": run_billing}[a.mode](a, Path(d))
    out["machine"] = f"{os.cpu_count()} cores"
    print(json.dumps(out, indent=1))
    if a.mode == "billing":
        return 0 if out["within_one_request"] and all(b["overshoot_tokens"] == 0 for b in out["bursts"].values()) \
            and out["billed_metrics"] == out["billed_audit"] else 1
    if a.mode == "streams":
        return 0 if out["outcomes"].get("ok") == a.streams and out["audit"]["ok"] else 1
    return 0 if out["p90_ratio"] is not None and out["p90_ratio"] <= 1.2 else 1


if __name__ == "__main__":
    sys.exit(main())
