"""Benchmark (a): latency of one scheduling decision - 8k-token prompt, 32 endpoints, a KV index of 1M blocks.

Setup: the precise index (``KVIndex``) is filled through its real ingestion path (``BlockStored`` events with
token ids) with prompts of 8,192 tokens (512 blocks of 16) until it holds ``--blocks`` keys; prompts share
system-prompt prefixes (64 of 2,048 tokens) and each is cached on 1-3 of the 32 endpoints. Each measured request
is 8,192 tokens: a stored prompt's first 0-8,192 tokens plus fresh tokens, so the index walk is often deep.
Endpoint metrics are random; 64 requests stay in flight (``on_complete`` follows 64 decisions later).

Timed: ``Scheduler.schedule`` end to end (producers incl. block hashing, filters, scorers, picker, hooks), with the
token ids given (the router already has them), and with ``--text`` also with a text prompt tokenized in the decision:
``text``, 8,192 tokens of fresh text (no tokenization cache hit); ``text-pfx2k``, one of 64 fixed 2,048-token texts
(system prompts) followed by 6,144 tokens of fresh text (the tokenizer's chunk cache holds the shared part).

With ``--ttft-slo-ms T`` every config is also timed with the deployment's TTFT target set (each decision then
reports the best endpoint's predicted TTFT headroom, the autoscaling signal), alternating with and without it.

Usage: .venv/bin/python benchmarks/sched_decision.py [--blocks 1000000] [--requests 2000] [--configs a,b]
       [--ttft-slo-ms 1000]
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import random
import statistics
import time
from array import array

from llmd_kserve.bench.stats import percentile
from llmd_kserve.config.build import build_scheduler
from llmd_kserve.kvcache.events import BlockStored
from llmd_kserve.kvcache.hashing import block_keys
from llmd_kserve.kvcache.index import KVIndex
from llmd_kserve.latency import load_profile
from llmd_kserve.plugins.base import PluginContext
from llmd_kserve.tokenizer import SimTokenizer
from llmd_kserve.types import Endpoint, EndpointId, EndpointMetrics, EndpointState, LLMRequest, RequestOutcome

BS = 16
PROMPT = 8192
SYSTEM = 2048


def tokens(rng: random.Random, n: int) -> list[int]:
    a = array("H", rng.randbytes(2 * n))
    return [3 + t % 31997 for t in a]


def fill_index(n_blocks: int, eps: list[EndpointState], rng: random.Random) -> tuple[KVIndex, list[list[int]]]:
    index = KVIndex(max_keys=max(n_blocks * 2, 1_000_000))
    systems = [tokens(rng, SYSTEM) for _ in range(64)]
    prompts: list[list[int]] = []
    ids = [e.id for e in eps]
    while len(index) < n_blocks:
        p = rng.choice(systems) + tokens(rng, PROMPT - SYSTEM)
        prompts.append(p)
        for ep in rng.sample(ids, rng.randint(1, 3)):
            hashes = [hash((ep, k)) for k in block_keys(p, BS)]
            index.apply(ep, [BlockStored(hashes, None, p, BS)])
    return index, prompts


def fresh_text(rng: random.Random, words: list[str], n_tokens: int) -> str:
    """English-like text of exactly ``n_tokens`` SimTokenizer tokens: words of 2-5 letters, punctuation, numbers."""
    parts = []
    for _ in range(n_tokens):
        r = rng.random()
        parts.append(" " + rng.choice(words) if r < 0.85 else " " + rng.choice(",.;:!?") if r < 0.95 else f" {rng.randrange(1000)}")
    return "".join(parts)


def run(config: str, ctx: PluginContext, eps, prompts, n: int, text: str | None, rng: random.Random) -> dict:
    sched = build_scheduler(config, ctx)
    tok = SimTokenizer()
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = ["".join(rng.choice(letters) for _ in range(rng.randint(2, 5))) for _ in range(20000)]
    systems = [fresh_text(rng, words, SYSTEM) for _ in range(64)] if text == "text-pfx2k" else []
    inflight = []
    lat: list[float] = []
    for i in range(n + 200):
        base = rng.choice(prompts)
        keep = rng.randrange(0, PROMPT + 1)
        if text == "text":  # 8,192 tokens of fresh text (no tokenization cache hit): one token per item
            body = {"prompt": fresh_text(rng, words, PROMPT)}
            req = LLMRequest(f"r{i}", "m", body)
        elif text:  # a shared 2,048-token text, then 6,144 tokens of fresh text
            body = {"prompt": rng.choice(systems) + fresh_text(rng, words, PROMPT - SYSTEM)}
            req = LLMRequest(f"r{i}", "m", body)
        else:
            ids = tuple(base[:keep]) + tuple(tokens(rng, PROMPT - keep))
            req = LLMRequest(f"r{i}", "m", {}, token_ids=ids)
        t0 = time.perf_counter()
        res = sched.schedule(req, eps)
        dt = time.perf_counter() - t0
        if i >= 200:
            lat.append(dt)
        inflight.append((req, res))
        if len(inflight) > 64:
            r, s = inflight.pop(0)
            sched.on_complete(r, s, RequestOutcome(ok=True))
    if text:
        assert res.prompt_tokens == len(tok.encode(body["prompt"])) == PROMPT, res.prompt_tokens
    return {
        "config": config, "input": text or "token ids", "n": n,
        "p50_ms": percentile(lat, 50) * 1e3, "p99_ms": percentile(lat, 99) * 1e3,
        "mean_ms": statistics.fmean(lat) * 1e3, "max_ms": max(lat) * 1e3,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--blocks", type=int, default=1_000_000)
    ap.add_argument("--endpoints", type=int, default=32)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--configs", default="precise-prefix,default,approx-prefix,load-only,round-robin")
    ap.add_argument("--text", action="store_true", help="also measure text prompts tokenized in the decision")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ttft-slo-ms", type=float, default=None,
                    help="also time each config with this TTFT target set (the headroom signal computed per decision)")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    eps = [
        EndpointState(
            Endpoint(EndpointId(f"http://10.0.{i // 250}.{i % 250}:8000")),
            EndpointMetrics(waiting=rng.randrange(0, 8), running=rng.randrange(0, 64), kv_usage=rng.random(),
                            num_gpu_blocks=30_000, stale=False),
        )
        for i in range(args.endpoints)
    ]
    t0 = time.perf_counter()
    index, prompts = fill_index(args.blocks, eps, rng)
    print(f"index: {len(index):,} blocks, {index.stats().entries:,} entries, {len(prompts)} prompts "
          f"({time.perf_counter() - t0:.1f} s to fill)")
    gc.collect()
    ctx = PluginContext(tokenizer=SimTokenizer(), index=index, rng=random.Random(args.seed),
                        clock=time.monotonic, profile=load_profile(), block_size=BS)
    targets = (None,) if args.ttft_slo_ms is None else (None, args.ttft_slo_ms / 1e3)
    print(f"{'config':<16}{'input':<12}{'ttft slo':>9}{'n':>6}{'p50 ms':>9}{'p99 ms':>9}{'mean ms':>9}{'max ms':>9}")
    for config in args.configs.split(","):
        for text in (None, "text", "text-pfx2k") if args.text else (None,):
            seed = rng.random()  # with and without the target: the same requests
            for target in targets:
                c = dataclasses.replace(ctx, ttft_target_s=target)
                r = run(config, c, eps, prompts, args.requests if not text else args.requests // 4, text,
                        random.Random(seed))
                slo = "-" if target is None else f"{target:g}s"
                print(f"{r['config']:<16}{r['input']:<12}{slo:>9}{r['n']:>6}{r['p50_ms']:>9.3f}{r['p99_ms']:>9.3f}"
                      f"{r['mean_ms']:>9.3f}{r['max_ms']:>9.3f}")


if __name__ == "__main__":
    main()
