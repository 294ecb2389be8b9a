"""Router replicas live: routing quality with 1 vs 2 replicas, and a replica killed under load.

``quality``: a shared-prefix workload (``--groups`` system prompts of ``--system-len`` tokens, ``--requests``
requests, seeded Poisson arrivals at ``--rate``/s) on ``--engines`` simulated engines, sent three times on fresh
engines (cold caches): to one router, to one router behind the stack's Envoy balancer (its hop alone), and to 2
router replicas behind the balancer (``up --routers 2``); ``--repeats`` times in turn. Same requests, same arrival
times. Prints the engines' prefix-cache hit rate (their counters' delta), the answers'
cached-token share, TTFT p50/p90 and the requests per replica.

``kill``: ``up --routers 2 --redis`` on 2 simulated engines, ``--clients`` closed-loop streaming clients through the
balancer; after ``--before`` answers one replica is SIGKILLed, and the run goes on until ``--after`` more requests
were sent. Prints every outcome, the errors before and after the kill, Envoy's retry and ejection counters, and
checks each replica's audit chain against the answered requests.

    PYTHONPATH=. .venv/bin/python benchmarks/router_faults.py quality --engines 4 --rate 4 --requests 160 --repeats 2
    PYTHONPATH=. .venv/bin/python benchmarks/router_faults.py kill --clients 16
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import aiohttp

from llmd_kserve.bench.loadgen import LoadConfig, run_load
from llmd_kserve.bench.stats import percentile
from llmd_kserve.bench.workloads import ArrivalSpec, SharedPrefixSpec, make_workload
from llmd_kserve.epp.envoy import envoy_argv
from llmd_kserve.governance.audit import verify
from llmd_kserve.governance.keys import add_key
from llmd_kserve.stack import LocalStack, free_port
from llmd_kserve.stack.balancer import BalancerConfig, wait_balanced


@contextlib.contextmanager
def _envoy_in_front(router_url: str) -> Iterator[str]:
    """The stack's balancer bootstrap over one router (to tell Envoy's hop from the second replica's effect)."""
    port, admin = free_port(), free_port()
    target = router_url.split("://", 1)[1]
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "balancer.json"
        path.write_text(json.dumps(BalancerConfig(routers=(target,), port=port, admin_port=admin).bootstrap()))
        proc = subprocess.Popen(envoy_argv(path), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_balanced(f"http://127.0.0.1:{admin}", [target], 60)
            yield f"http://127.0.0.1:{port}"
        finally:
            proc.terminate()
            proc.wait(10)


def _quality_run(a: argparse.Namespace, variant: str) -> dict[str, object]:
    """``variant``: ``1`` (one router), ``1+envoy`` (one router behind the balancer), ``2`` (two replicas)."""
    spec = SharedPrefixSpec(num_groups=a.groups, prompts_per_group=max(1, a.requests // a.groups),
                            system_prompt_len=a.system_len, question_len=128, output_len=64)
    arrival = ArrivalSpec(pattern="poisson", rate=a.rate)
    requests = make_workload(spec, arrival, random.Random(a.seed), a.requests)
    routers = 2 if variant == "2" else 1
    with LocalStack(engines=a.engines, routers=routers, config=a.config, prometheus=False) as st, \
            (_envoy_in_front(st.router_url) if variant == "1+envoy" else contextlib.nullcontext(st.router_url)) as url:
        result = asyncio.run(run_load(requests, arrival, LoadConfig(target=url, engine_urls=st.engine_base_urls,
                                                                     progress=False)))
        per_replica = [_count_requests(u) for u in st.router_urls]
    ok = [r for r in result.results if r.ok]
    ttft = [r.ttft for r in ok if r.ttft is not None]
    prompt = sum(r.prompt_tokens for r in ok)
    cached = sum(r.cached_tokens or 0 for r in ok)
    return {"routers": variant, "ok": len(ok), "n": len(result.results), "engine_hit_rate": result.engine_hit_rate,
            "cached_share": cached / prompt if prompt else None, "ttft_p50": percentile(ttft, 50),
            "ttft_p90": percentile(ttft, 90), "per_replica": per_replica,
            "per_engine": dict(sorted(Counter(r.endpoint for r in ok).items()))}


def _count_requests(router_url: str) -> int:
    """Completions this router answered (its ``llmd_router_requests_total``)."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(router_url + "/metrics", timeout=5) as r:
        text = r.read().decode()
    return int(sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
                   if s.name == "llmd_router_requests_total" and s.labels.get("status") == "200"))


def quality(a: argparse.Namespace) -> None:
    rows = [_quality_run(a, v) for v in ["1", "1+envoy", "2"] * a.repeats]
    print(f"workload: shared-prefix, {a.groups} groups x {a.system_len}-token system prompts, {a.requests} requests "
          f"at {a.rate}/s (Poisson, seed {a.seed}), {a.engines} simulated engines, config {a.config}")
    print("routers  ok/n     engine hit rate  cached share  TTFT p50 (s)  TTFT p90 (s)  per replica  per engine")
    for r in rows:
        print(f"{r['routers']:<8} {r['ok']}/{r['n']:<6} {_f(r['engine_hit_rate']):<16} {_f(r['cached_share']):<13} "
              f"{_f(r['ttft_p50']):<13} {_f(r['ttft_p90']):<13} {r['per_replica']!s:<12} "
              f"{list(r['per_engine'].values())}")  # type: ignore[attr-defined]
    print(f"load average: {os.getloadavg()}")


def _f(v: object) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


async def _client(url: str, key: str, i: int, results: dict[str, tuple[str, float]], until: list[float]) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as s:
        n = 0
        while time.monotonic() < until[0]:
            rid, sent = f"c{i}-{n}", time.monotonic()
            n += 1
            body = {"model": "llama-8b-shape", "prompt": f"client {i} request {n} " * 8, "max_tokens": 48,
                    "stream": True, "ignore_eos": True}
            try:
                async with s.post(url + "/v1/completions", json=body,
                                  headers={"Authorization": f"Bearer {key}", "x-request-id": rid}) as r:
                    raw = await r.read()
                    ok = r.status == 200 and raw.rstrip().endswith(b"[DONE]")
                    results[rid] = ("ok" if ok else f"http_{r.status}", sent)
            except (TimeoutError, aiohttp.ClientError) as exc:
                results[rid] = (type(exc).__name__, sent)


def _envoy_stats(admin_url: str) -> dict[str, int]:
    with urllib.request.urlopen(admin_url + "/stats?format=json", timeout=5) as r:
        stats = json.load(r)["stats"]
    names = ("upstream_rq_retry", "upstream_rq_retry_success", "upstream_rq_retry_overflow", "upstream_cx_connect_fail",
             "outlier_detection.ejections_enforced_total", "health_check.failure")
    return {n: int(s["value"]) for s in stats if "value" in s for n in names if s["name"] == f"cluster.routers.{n}"}


def kill(a: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="router-faults-") as d:
        _kill(a, Path(d))


def _kill(a: argparse.Namespace, tmp: Path) -> None:
    keys = tmp / "keys.yaml"
    key, _ = add_key(keys, tenant="bench")
    with LocalStack(engines=2, routers=2, redis=True, prometheus=False,
                    router_args=("--keys-file", str(keys), "--audit-file", str(tmp / "audit.jsonl"))) as st:
        assert st.balancer is not None
        results: dict[str, tuple[str, float]] = {}
        killed_at = 0.0

        async def load() -> None:
            nonlocal killed_at
            until = [time.monotonic() + 120]
            tasks = [asyncio.ensure_future(_client(st.router_url, key, i, results, until)) for i in range(a.clients)]
            while sum(v == "ok" for v, _ in results.values()) < a.before:
                await asyncio.sleep(0.02)
            killed_at = time.monotonic()
            os.kill(st.replicas[0].popen.pid, signal.SIGKILL)
            while sum(sent > killed_at for _, sent in results.values()) < a.after:
                await asyncio.sleep(0.02)
            until[0] = 0.0
            await asyncio.wait_for(asyncio.gather(*tasks), 90)

        asyncio.run(load())
        envoy = _envoy_stats(st.balancer.url)
    before = Counter(v for v, sent in results.values() if sent <= killed_at)
    after = Counter(v for v, sent in results.values() if sent > killed_at)
    ok = {rid for rid, (v, _) in results.items() if v == "ok"}
    admitted: set[str] = set()
    chains = []
    for i in range(2):
        f = tmp / f"audit.router-{i}.jsonl"
        rep = verify([f])
        chains.append(f"router-{i}: {'whole' if rep.ok else rep.errors[:1]}, {rep.records} records")
        admitted |= {json.loads(x).get("client_request_id") for x in f.read_text().splitlines()
                     if json.loads(x).get("event") == "admit"}
    print(f"{a.clients} streaming clients (48 tokens each) through the balancer over 2 replicas; replica 0 SIGKILLed "
          f"after {a.before} answers")
    print(f"sent before the kill: {dict(before)}")
    print(f"sent after the kill:  {dict(after)}")
    print(f"requests: {len(results)}, answered 200: {len(ok)}, errors seen by clients: {len(results) - len(ok)}, "
          f"none without an outcome")
    print(f"envoy: {envoy}")
    print(f"audit chains: {'; '.join(chains)}; answered requests without an admit record: {len(ok - admitted)}")
    print(f"load average: {os.getloadavg()}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    q = sub.add_parser("quality")
    q.add_argument("--engines", type=int, default=4)
    q.add_argument("--rate", type=float, default=8.0)
    q.add_argument("--requests", type=int, default=240)
    q.add_argument("--groups", type=int, default=8)
    q.add_argument("--system-len", type=int, default=2048)
    q.add_argument("--config", default="default")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--repeats", type=int, default=1, help="run the three variants this many times, in turn")
    k = sub.add_parser("kill")
    k.add_argument("--clients", type=int, default=16)
    k.add_argument("--before", type=int, default=100)
    k.add_argument("--after", type=int, default=100)
    a = p.parse_args()
    quality(a) if a.cmd == "quality" else kill(a)


if __name__ == "__main__":
    main()
