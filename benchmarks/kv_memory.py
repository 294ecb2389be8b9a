"""Benchmark (d): bytes per indexed block of the precise KV index (tracemalloc), and lookup latency on it.

Builds a ``KVIndex`` of ~1M router block keys from BlockStored events of 8k-token prompts (512 blocks, published as
16 events of 32 blocks), in two shapes:
  1. one endpoint holding every block (1 entry per key);
  2. 32 endpoints, each prompt held by ``--replicas`` endpoints (the same tokens, different engine hashes).
Reports traced bytes / key and / (endpoint, block) entry, then ``match()`` latency for an 8k-token prompt (512 keys)
over all 32 endpoints: a full hit and a miss at block 0.

Usage: .venv/bin/python benchmarks/kv_memory.py [--blocks 1000000] [--replicas 2]
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import time
import tracemalloc

from llmd_kserve.bench.stats import percentile
from llmd_kserve.kvcache.events import BlockStored
from llmd_kserve.kvcache.hashing import block_keys
from llmd_kserve.kvcache.index import KVIndex
from llmd_kserve.types import EndpointId

BS = 16
PROMPT_BLOCKS = 512


def build(n_blocks: int, endpoints: list[EndpointId], replicas: int, rng: random.Random, traced: bool):
    pool = [rng.randrange(32000) for _ in range(1 << 16)]
    index = KVIndex(max_keys=n_blocks + 1)
    gc.collect()
    if traced:
        tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0] if traced else 0
    prompts = []
    for p in range(n_blocks // PROMPT_BLOCKS):
        off = rng.randrange(len(pool) - PROMPT_BLOCKS * BS)
        tokens = [p, *pool[off : off + PROMPT_BLOCKS * BS - 1]]  # first token unique: every prompt's keys differ
        if len(prompts) < 50:
            prompts.append(tokens)
        for eid in rng.sample(endpoints, replicas):
            parent = None
            for i in range(0, PROMPT_BLOCKS, 32):
                hashes = [rng.getrandbits(64) for _ in range(32)]
                index.apply(eid, [BlockStored(hashes, parent, tokens[i * BS : (i + 32) * BS], BS)])
                parent = hashes[-1]
    gc.collect()
    used = tracemalloc.get_traced_memory()[0] - before if traced else 0
    if traced:
        tracemalloc.stop()
    return index, used, prompts


def lookup_latency(index: KVIndex, keys_list: list[list[int]], endpoints, repeats: int = 200) -> tuple[float, float]:
    samples = []
    for r in range(repeats):
        keys = keys_list[r % len(keys_list)]
        t0 = time.perf_counter()
        index.match(keys, endpoints)
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples) * 1e6, (percentile(samples, 99) or 0.0) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--blocks", type=int, default=1_000_000)
    ap.add_argument("--replicas", type=int, default=2)
    args = ap.parse_args()
    rng = random.Random(0)
    print(f"KV index memory, ~{args.blocks:,} router keys from 8k-token prompts (tracemalloc, CPython)")

    index, used, _ = build(args.blocks, [EndpointId("http://e0")], 1, rng, traced=True)
    st = index.stats()
    print(f"1 endpoint : {st.keys:,} keys, {st.entries:,} entries, {used / 2**20:,.1f} MiB traced = "
          f"{used / st.keys:,.0f} B/key = {used / st.entries:,.0f} B/entry")
    del index
    gc.collect()

    eps = [EndpointId(f"http://10.0.0.{i}:8000") for i in range(32)]
    index, used, prompts = build(args.blocks, eps, args.replicas, rng, traced=True)
    st = index.stats()
    print(f"32 endpoints x{args.replicas} replicas: {st.keys:,} keys, {st.entries:,} entries, "
          f"{used / 2**20:,.1f} MiB traced = {used / st.keys:,.0f} B/key = {used / st.entries:,.0f} B/entry")

    hit_keys = [block_keys(t, BS) for t in prompts]
    m = index.match(hit_keys[0], eps)
    assert sorted(m.values())[-args.replicas:] == [PROMPT_BLOCKS] * args.replicas, m
    miss_keys = [[k ^ 1 for k in keys] for keys in hit_keys]
    partial = [keys[:256] + [k ^ 1 for k in keys[256:]] for keys in hit_keys]
    for label, ks in (("full hit (512/512)", hit_keys), ("half hit (256/512)", partial), ("miss", miss_keys)):
        p50, p99 = lookup_latency(index, ks, eps)
        print(f"match(512 keys, 32 endpoints) on this index, {label}: p50 {p50:.1f} us, p99 {p99:.1f} us")


if __name__ == "__main__":
    main()
