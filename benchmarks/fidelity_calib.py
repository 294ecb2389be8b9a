"""Capture a calibration set from a running OpenAI server (real vLLM), in the shape ``engine_sim.calibrate`` replays.

    python benchmarks/fidelity_calib.py --url http://127.0.0.1:8001 [--url ...] --rounds 3 --out calib.json

The same scenarios as the H100 capture (``engine_sim/calibration/h100-llama8b``), scaled to a small KV cache:
prefill TTFT by prompt length (cold, then the same prompt warm), partial prefix hits on an 8,192-token prompt,
decode batches of 512-token prompts x 128 output tokens, and mixed long-prompt batches. Each round runs on every
``--url`` in turn (one request set at a time: replicas pinned to different cores see the same work); every number
written is the median over rounds and URLs, and the raw per-round values are kept. Token-id prompts (``--vocab``)
so the server's tokenizer cannot change lengths. The load average before and after each round goes in the file.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import time
from itertools import pairwise
from pathlib import Path
from typing import Any

import aiohttp

PREFILL_LENGTHS = (128, 512, 1024, 2048, 4096, 8192)
HIT_BASE = 8192
HIT_FRACS = (0.0, 0.25, 0.5, 0.75, 0.9)
DECODE_CONCURRENCY = (1, 4, 8, 16)
MIXED = ((4, 2048), (8, 1024))


async def one(s: aiohttp.ClientSession, url: str, model: str, prompt: list[int], max_tokens: int) -> dict[str, Any]:
    """One streamed request: TTFT, mean inter-token gap, end-to-end (seconds from the send)."""
    body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "ignore_eos": True, "temperature": 0.0,
            "stream": True}
    t0 = time.perf_counter()
    stamps: list[float] = []
    async with s.post(f"{url}/v1/completions", json=body) as r:
        if r.status != 200:
            raise RuntimeError(f"{url}: HTTP {r.status}: {(await r.text())[:200]}")
        async for line in r.content:
            line = line.strip()
            if line.startswith(b"data:") and line != b"data: [DONE]":
                stamps.append(time.perf_counter() - t0)
    gaps = [b - a for a, b in pairwise(stamps)]
    return {"ttft": stamps[0], "e2e": time.perf_counter() - t0, "itl_mean": statistics.mean(gaps) if gaps else None}


async def one_round(s: aiohttp.ClientSession, url: str, model: str, rng: random.Random, vocab: int) -> dict[str, Any]:
    """Every scenario once on ``url``, after resetting its prefix cache."""
    def toks(n: int) -> list[int]:
        return [rng.randrange(3, vocab) for _ in range(n)]

    async with s.post(f"{url}/reset_prefix_cache") as r:
        if r.status != 200:
            raise RuntimeError(f"{url}: /reset_prefix_cache answered {r.status} (VLLM_SERVER_DEV_MODE=1?)")
    for _ in range(3):  # warm-up
        await one(s, url, model, toks(512), 8)
    res: dict[str, Any] = {"prefill": [], "prefix_hit": [], "decode": [], "mixed": []}
    for n in PREFILL_LENGTHS:
        cold, warm = [], []
        for _ in range(3):
            p = toks(n)
            cold.append((await one(s, url, model, p, 2))["ttft"])
            warm.append((await one(s, url, model, p, 2))["ttft"])
        res["prefill"].append({"len": n, "cold": cold, "warm": warm})
    base = toks(HIT_BASE)
    await one(s, url, model, base, 2)
    for f in HIT_FRACS:
        k = int(HIT_BASE * f)
        res["prefix_hit"].append({"shared_frac": f, "ttft": (await one(s, url, model, base[:k] + toks(HIT_BASE - k),
                                                                        2))["ttft"]})
    for c in DECODE_CONCURRENCY:
        rs = await asyncio.gather(*(one(s, url, model, toks(512), 128) for _ in range(c)))
        res["decode"].append({"concurrency": c, "itl_med": statistics.median(r["itl_mean"] for r in rs),
                              "ttft_med": statistics.median(r["ttft"] for r in rs)})
    for c, n in MIXED:
        rs = await asyncio.gather(*(one(s, url, model, toks(n), 64) for _ in range(c)))
        res["mixed"].append({"concurrency": c, "len": n, "ttft_med": statistics.median(r["ttft"] for r in rs),
                             "ttft_max": max(r["ttft"] for r in rs),
                             "itl_med": statistics.median(r["itl_mean"] for r in rs)})
    return res


def combine(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """The calibration file: each number the median over rounds, raw values kept beside it."""
    med = statistics.median
    out: dict[str, Any] = {"prefill": [], "prefix_hit": [], "decode": [], "mixed": []}
    for i, row in enumerate(rounds[0]["prefill"]):
        cold = [x for r in rounds for x in r["prefill"][i]["cold"]]
        warm = [x for r in rounds for x in r["prefill"][i]["warm"]]
        out["prefill"].append({"len": row["len"], "ttft_cold_med": med(cold), "ttft_warm_med": med(warm),
                               "cold": cold, "warm": warm})
    for i, row in enumerate(rounds[0]["prefix_hit"]):
        vals = [r["prefix_hit"][i]["ttft"] for r in rounds]
        out["prefix_hit"].append({"shared_frac": row["shared_frac"], "ttft": med(vals), "rounds": vals})
    for key, fields in (("decode", ("itl_med", "ttft_med")), ("mixed", ("ttft_med", "ttft_max", "itl_med"))):
        for i, row in enumerate(rounds[0][key]):
            entry = {k: v for k, v in row.items() if k in ("concurrency", "len")}
            for f in fields:
                entry[f] = med(r[key][i][f] for r in rounds)
            entry["rounds"] = [{f: r[key][i][f] for f in fields} for r in rounds]
            out[key].append(entry)
    return out


async def capture(urls: list[str], rounds: int, seed: int, vocab: int, concurrent: bool = False) -> dict[str, Any]:
    """``rounds`` rounds on every URL, one URL at a time, or (``concurrent``) on all URLs at once, so that every
    replica runs while the others are busy too (as in a load test on a shared machine)."""
    rng = random.Random(seed)
    raw, loads = [], []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=900)) as s:
        async with s.get(f"{urls[0]}/v1/models") as r:
            model = (await r.json())["data"][0]["id"]
        for i in range(rounds):
            if concurrent:
                before = os.getloadavg()
                rngs = [random.Random(rng.random()) for _ in urls]
                raw += await asyncio.gather(*(one_round(s, u, model, g, vocab) for u, g in zip(urls, rngs, strict=True)))
                loads += [{"round": i, "url": u, "load_before": before, "load_after": os.getloadavg()} for u in urls]
                print(f"fidelity_calib: round {i} on all URLs at once done, load {loads[-1]['load_after'][0]:.2f}",
                      file=sys.stderr, flush=True)
                continue
            for url in urls:
                before = os.getloadavg()
                raw.append(await one_round(s, url, model, rng, vocab))
                loads.append({"round": i, "url": url, "load_before": before, "load_after": os.getloadavg()})
                print(f"fidelity_calib: round {i} on {url} done, load {loads[-1]['load_after'][0]:.2f}",
                      file=sys.stderr, flush=True)
    return combine(raw) | {"model": model, "urls": urls, "rounds_run": len(raw), "load": loads, "concurrent": concurrent,
                           "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", action="append", required=True, help="an OpenAI server (repeat for several)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--vocab", type=int, default=8192, help="token ids are drawn from [3, VOCAB)")
    p.add_argument("--out", type=Path, required=True, help="calib.json to write")
    p.add_argument("--concurrent", action="store_true", help="each round on all URLs at once")
    a = p.parse_args(argv)
    if a.rounds < 1 or a.vocab <= 3:
        raise SystemExit("fidelity_calib: --rounds must be >= 1 and --vocab > 3")
    data = asyncio.run(capture([u.rstrip("/") for u in a.url], a.rounds, a.seed, a.vocab, a.concurrent))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(data, indent=1))
    print(f"fidelity_calib: wrote {a.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
