"""Router-predicted vs engine-reported cached tokens, and prefix affinity, against real vLLM replicas.

Starts ``llmd-kserve router`` in front of already running vLLM servers (no ``#kv=``, no ``--block-size``: the
router asks the engines for their KV-event publishers and learns their block size), once per scheduler config and
tokenizer mode, and sends a workload of shared-prefix requests of three kinds: text completions, token-id
completions and chats. Per request it reads the engine's ``usage.prompt_tokens_details.cached_tokens`` (start vLLM
with ``--enable-prompt-tokens-details``) and the router's ``predicted_cached_tokens`` (``GET /debug/decisions``).
Before each run it empties the engines' prefix caches (``POST /reset_prefix_cache``: ``VLLM_SERVER_DEV_MODE=1``).

Reported per config, tokenizer and kind: requests, mean and max |predicted - reported| cached tokens (the engine
counts whole blocks), and of the repeat requests of a prefix (all but its first) the share sent to the replica its
first request went to (the one holding the prefix) and their mean reported cached tokens.

    PYTHONPATH=. .venv/bin/python benchmarks/vllm_cached_tokens.py --engines http://127.0.0.1:8100,http://127.0.0.1:8101 \\
        --model-dir /path/to/model [--configs default,precise-prefix] [--tokenizers dir,render] [--prefixes 6]
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import json
import random
import statistics
import sys
import sysconfig
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from llmd_kserve.stack.procs import free_port, spawn, terminate, wait_healthy
from llmd_kserve.tokenizer import load_tokenizer

KINDS = ("text", "ids", "chat")


def corpus() -> str:
    """Plain text to cut prompts from: this Python's own ``email`` package sources."""
    files = sorted(glob.glob(sysconfig.get_paths()["stdlib"] + "/email/*.py"))[:10]
    return " ".join(Path(f).read_text() for f in files)


def workload(model_dir: str, prefixes: int, repeats: int, prefix_chars: int, seed: int) -> list[dict[str, Any]]:
    """Requests in rounds (every prefix once per round): ``kind``, ``prefix`` and the OpenAI body."""
    src, tok = corpus(), load_tokenizer(model_dir)
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    shared = {(k, p): src[(i := rng.randrange(len(src) - prefix_chars)): i + prefix_chars]
              for k in KINDS for p in range(prefixes)}
    for r in range(repeats):
        for kind in KINDS:
            for p in range(prefixes):
                suffix = f"\nQuestion {r}-{p}: " + src[(j := rng.randrange(len(src) - 120)): j + 120]
                text = shared[(kind, p)] + suffix
                if kind == "chat":
                    body: dict[str, Any] = {"messages": [{"role": "system", "content": shared[(kind, p)]},
                                                         {"role": "user", "content": suffix}]}
                elif kind == "ids":
                    body = {"prompt": tok.encode(text)}
                else:
                    body = {"prompt": text}
                out.append({"kind": kind, "prefix": p, "round": r, "body": {**body, "max_tokens": 1}})
    return out


async def reset_caches(session: aiohttp.ClientSession, engines: list[str]) -> None:
    for e in engines:
        async with session.post(f"{e}/reset_prefix_cache") as r:
            if r.status != 200:
                raise SystemExit(f"{e}/reset_prefix_cache answered {r.status}: start vLLM with VLLM_SERVER_DEV_MODE=1")


async def run_one(router: str, reqs: list[dict[str, Any]], gap_s: float, model: str) -> list[dict[str, Any]]:
    rows = []
    async with aiohttp.ClientSession() as s:
        for i, q in enumerate(reqs):
            rid = f"bench-{i}-{int(time.time() * 1000)}"
            path = "/v1/chat/completions" if q["kind"] == "chat" else "/v1/completions"
            async with s.post(router + path, json={**q["body"], "model": model}, headers={"x-request-id": rid}) as r:
                data = await r.json()
                if r.status != 200:
                    raise SystemExit(f"request {i} failed ({r.status}): {data}")
                endpoint = r.headers.get("x-llmd-endpoint")
            details = data["usage"].get("prompt_tokens_details") or {}
            rows.append({**q, "rid": rid, "endpoint": endpoint, "prompt_tokens": data["usage"]["prompt_tokens"],
                         "reported": details.get("cached_tokens")})
            await asyncio.sleep(gap_s)
        for row in rows:
            async with s.get(f"{router}/debug/decisions", params={"request_id": row["rid"]}) as r:
                decisions = (await r.json())["decisions"]
            row["predicted"] = decisions[-1]["predicted_cached_tokens"] if decisions else None
            row["router_prompt_tokens"] = decisions[-1]["prompt_tokens"] if decisions else None
    return rows


def summarize(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out = {}
    for kind in KINDS:
        mine = [r for r in rows if r["kind"] == kind]
        diffs = [abs(r["predicted"] - r["reported"]) for r in mine if r["predicted"] is not None]
        first = {r["prefix"]: r["endpoint"] for r in mine if r["round"] == 0}
        repeats = [r for r in mine if r["round"] > 0]
        out[kind] = {
            "requests": len(mine),
            "mean_abs_diff": round(statistics.mean(diffs), 1) if diffs else None,
            "max_abs_diff": max(diffs) if diffs else None,
            "prompt_tokens_equal": sum(r["router_prompt_tokens"] == r["prompt_tokens"] for r in mine),
            "repeats_on_holder": f"{sum(r['endpoint'] == first[r['prefix']] for r in repeats)}/{len(repeats)}",
            "repeat_mean_reported": round(statistics.mean(r["reported"] for r in repeats), 1) if repeats else None,
            "repeat_mean_predicted": round(statistics.mean(r["predicted"] for r in repeats), 1) if repeats else None,
        }
    return out


async def measure(router: str, engines: list[str], reqs: list[dict[str, Any]], gap_s: float,
                  model: str | None) -> list[dict[str, Any]]:
    """Empty the engines' caches, then send the workload through the router."""
    async with aiohttp.ClientSession() as s:
        await reset_caches(s, engines)
        if model is None:
            async with s.get(f"{engines[0]}/v1/models") as r:
                model = (await r.json())["data"][0]["id"]
    await asyncio.sleep(0.5)
    return await run_one(router, reqs, gap_s, model)


async def wait_subscribed(router: str, n: int, timeout: float = 20.0) -> None:
    """Until the router lists a KV-event address for ``n`` endpoints (learnt from ``/kv_event_sources``)."""
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as s:
        while time.monotonic() < deadline:
            async with s.get(f"{router}/debug/endpoints") as r:
                eps = (await r.json())["endpoints"]
            if sum(1 for e in eps if e["kv_events"]) >= n:
                return
            await asyncio.sleep(0.2)
    raise SystemExit(f"the router did not learn {n} KV-event addresses in {timeout:g} s")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--engines", required=True, help="vLLM base URLs, comma-separated")
    ap.add_argument("--model-dir", required=True, help="the served model's directory (its tokenizer)")
    ap.add_argument("--model", default=None, help="served model name (default: the engines' first)")
    ap.add_argument("--configs", default="default,precise-prefix")
    ap.add_argument("--tokenizers", default="dir,render",
                    help="dir (--tokenizer MODEL_DIR), json (MODEL_DIR/tokenizer.json), render, sim")
    ap.add_argument("--prefixes", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=4)
    ap.add_argument("--prefix-chars", type=int, default=3000)
    ap.add_argument("--gap", type=float, default=0.2, help="seconds between requests")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default=None, help="write every request's row as JSON here")
    ap.add_argument("--router-src", default=None,
                    help="run the router from this source tree instead (a baseline); URLs may then carry #kv=")
    a = ap.parse_args()
    given = [e.rstrip("/") for e in a.engines.split(",")]  # as the router is told (#kv=... for a baseline)
    engines = [e.partition("#")[0] for e in given]
    reqs = workload(a.model_dir, a.prefixes, a.repeats, a.prefix_chars, a.seed)
    results: dict[str, Any] = {}
    log_dir = Path(tempfile.mkdtemp(prefix="vllm-cached-"))
    for tokenizer in a.tokenizers.split(","):
        for config in a.configs.split(","):
            port = free_port()
            router = f"http://127.0.0.1:{port}"
            order = list(reversed(given)) if tokenizer == "render" else given  # render: ask the 2nd first
            tok = {"dir": a.model_dir, "json": f"{a.model_dir}/tokenizer.json"}.get(tokenizer, tokenizer)
            argv = [sys.executable, "-m", "llmd_kserve.cli", "router", "--port", str(port), "--config", config,
                    "--endpoints", ",".join(order), "--tokenizer", tok]
            if a.router_src:
                argv = ["env", "-C", a.router_src, f"PYTHONPATH={a.router_src}", *argv]  # -m puts the cwd first
            proc = spawn(f"router-{config}-{tokenizer}", argv, log_dir, router)
            try:
                wait_healthy([proc], 60)
                asyncio.run(wait_subscribed(router, len(engines)))
                rows = asyncio.run(measure(router, engines, reqs, a.gap, a.model))
            finally:
                terminate([proc])
            key = f"{config} / --tokenizer {tokenizer}"
            results[key] = {"summary": summarize(rows), "rows": rows}
            print(f"\n{key}")
            for kind, s in results[key]["summary"].items():
                print(f"  {kind:5s} {json.dumps(s)}")
            print(f"  router log: {log_dir / (proc.name + '.log')}")
    if a.out:
        Path(a.out).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
