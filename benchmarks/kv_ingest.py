"""Benchmark (b): KV-event ingestion rate of the precise index, on one core, in block hashes per second.

Measures the subscriber's per-message path (sequence check + ``decode_payload`` + ``KVIndex.apply``) - everything
but the socket read - on:
  1. the 400 golden vLLM 0.26 frames (shared/vllm-wire), replayed as if from 32 endpoints;
  2. synthetic vLLM-0.26-shaped payloads (map encoding, int hashes): 32 endpoints, 8k-token prompts published as
     16 events of 32 blocks, 2 events per message, until the index holds ~1M blocks;
  3. the same in the older array encoding, and with 32-byte (sha256) bytes hashes.
  4. synthetic map payloads into an index capped at a quarter of them (LRU eviction running all along).
Then the same golden replay end to end through real ZMQ PUB -> SUB over tcp://127.0.0.1 (publisher in a thread).

Usage: .venv/bin/python benchmarks/kv_ingest.py [--blocks 1000000] [--cpu 0]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import threading
import time
from pathlib import Path

from llmd_kserve.kvcache.events import BlockRemoved, BlockStored, EventBatch, encode_payload
from llmd_kserve.kvcache.index import KVIndex
from llmd_kserve.kvcache.subscriber import KVEventSubscriber
from llmd_kserve.types import Endpoint, EndpointId

GOLDEN = Path(__file__).resolve().parents[2] / "shared" / "vllm-wire" / "kv_events_frames.json"
BS = 16


def golden_frames() -> list[list[bytes]]:
    data = json.loads(GOLDEN.read_text())
    return [[base64.b64decode(p) for p in f] for f in data["frames_b64"]]


def synthetic(n_blocks: int, n_endpoints: int, fmt: str, bytes_hashes: bool, seed: int = 0):
    """[(endpoint, frames)] : 8k-token prompts (512 blocks) as 16 x 32-block events, 2 events per message."""
    rng = random.Random(seed)
    vocab = range(32000)
    msgs = []
    seq: dict[int, int] = {}
    blocks = 0
    while blocks < n_blocks:
        e = rng.randrange(n_endpoints)
        parent = None
        events = []
        for _ in range(16):
            hashes = [rng.getrandbits(64) for _ in range(32)]
            events.append(BlockStored(hashes, parent, rng.choices(vocab, k=32 * BS), BS))
            parent = hashes[-1]
            blocks += 32
        for i in range(0, 16, 2):
            payload = encode_payload(EventBatch(time.time(), events[i : i + 2], 0), fmt=fmt)
            if bytes_hashes:  # re-encode hashes as 32-byte strings (what sha256 without int hashes looks like)
                payload = _bytes_version(events[i : i + 2])
            s = seq.get(e, 0)
            seq[e] = s + 1
            msgs.append((e, [b"kv", s.to_bytes(8, "big"), payload]))
    return msgs, blocks


def _bytes_version(events) -> bytes:
    import msgspec

    def b(h):
        return h.to_bytes(32, "big") if h is not None else None

    raw = [{"type": "BlockStored", "block_hashes": [b(h) for h in ev.block_hashes],
            "parent_block_hash": b(ev.parent_block_hash), "token_ids": ev.token_ids, "block_size": BS,
            "lora_id": None, "medium": "GPU", "lora_name": None} for ev in events]
    return msgspec.msgpack.encode([time.time(), raw, 0])


def run_handle(msgs, n_endpoints: int, max_keys: int = 10_000_000) -> tuple[float, int, KVIndex]:
    index = KVIndex(max_keys=max_keys)
    sub = KVEventSubscriber(index)
    eids = [EndpointId(f"http://10.0.0.{i}:8000") for i in range(n_endpoints)]
    for eid in eids:
        sub.add(Endpoint(eid, kv_events="tcp://127.0.0.1:1"))  # never started: we call handle_message directly
    handle = sub.handle_message
    t0 = time.perf_counter()
    for e, frames in msgs:
        handle(eids[e], frames)
    dt = time.perf_counter() - t0
    blocks = sum(s.blocks for s in sub.stats().values())
    assert sum(s.decode_errors + s.gaps for s in sub.stats().values()) == 0
    return dt, blocks, index


def golden_msgs(n_endpoints: int):
    frames = golden_frames()
    return [(e, f) for e in range(n_endpoints) for f in frames]


async def zmq_end_to_end(frames, repeats: int) -> tuple[float, int]:
    import zmq

    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.SNDHWM, 0)
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    index = KVIndex(max_keys=10_000_000)
    eid = EndpointId("http://pub")
    sub = KVEventSubscriber(index)
    sub.add(Endpoint(eid, kv_events=f"tcp://127.0.0.1:{port}"))
    await sub.start()
    while sub.stats()[eid].decode_errors == 0:  # slow joiner
        pub.send_multipart([b"sync"])
        await asyncio.sleep(0.01)
    msgs = [[t, (r * len(frames) + i).to_bytes(8, "big"), p] for r in range(repeats) for i, (t, _, p) in
            enumerate(frames)]
    # later repeats re-store hashes already held: stores still go through the whole path
    last = len(msgs) - 1

    def send():
        for m in msgs:
            pub.send_multipart(m)

    t0 = time.perf_counter()
    th = threading.Thread(target=send)
    th.start()
    while sub.stats()[eid].last_seq != last:
        await asyncio.sleep(0.001)
    dt = time.perf_counter() - t0
    th.join()
    st = sub.stats()[eid]
    await sub.stop()
    pub.close(0)
    ctx.term()
    assert st.gaps == 0
    return dt, st.blocks


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--blocks", type=int, default=1_000_000)
    ap.add_argument("--endpoints", type=int, default=32)
    ap.add_argument("--cpu", type=int, default=0, help="pin to this core (-1: no pinning)")
    args = ap.parse_args()
    if args.cpu >= 0 and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.cpu})
    print(f"KV-event ingestion, one core (pinned to cpu {args.cpu}), {args.endpoints} endpoints")

    dt, blocks, index = run_handle(golden_msgs(args.endpoints), args.endpoints)
    print(f"golden vLLM 0.26 frames x{args.endpoints} endpoints: {blocks:,} block events in {dt:.3f} s = "
          f"{blocks / dt:,.0f} blocks/s  (index: {len(index):,} keys, {index.stats().entries:,} entries)")

    for fmt, bh in (("map", False), ("array", False), ("map", True)):
        msgs, n = synthetic(args.blocks, args.endpoints, fmt, bh)
        dt, blocks, index = run_handle(msgs, args.endpoints)
        label = f"synthetic {fmt}{' bytes-hashes' if bh else ''}"
        print(f"{label}: {blocks:,} blocks in {dt:.3f} s = {blocks / dt:,.0f} blocks/s  "
              f"(index: {len(index):,} keys)")
        if fmt == "map" and not bh:
            cap = args.blocks // 4
            dt, blocks, index = run_handle(msgs, args.endpoints, max_keys=cap)
            print(f"synthetic map at capacity (max_keys={cap:,}, evicting LRU): {blocks:,} blocks in {dt:.3f} s = "
                  f"{blocks / dt:,.0f} blocks/s  (index: {len(index):,} keys, {index.stats().evictions:,} evictions)")
        del msgs

    # removal rate: remove every block again
    msgs, n = synthetic(args.blocks // 4, args.endpoints, "map", False, seed=1)
    dt, _, index = run_handle(msgs, args.endpoints)
    rm = []
    for eid, emap in index._maps.items():  # noqa: SLF001 - benchmark only
        hashes = list(emap)
        rm += [(eid, BlockRemoved(hashes[i : i + 64])) for i in range(0, len(hashes), 64)]
    t0 = time.perf_counter()
    for eid, ev in rm:
        index.apply(eid, [ev])
    dt = time.perf_counter() - t0
    print(f"BlockRemoved: {index.stats().blocks_removed:,} blocks in {dt:.3f} s = "
          f"{index.stats().blocks_removed / dt:,.0f} blocks/s (index left: {len(index)} keys)")

    frames = golden_frames()
    dt, blocks = asyncio.run(zmq_end_to_end(frames, repeats=5))
    print(f"end to end over ZMQ tcp (publisher thread + subscriber, golden x5): {blocks:,} blocks in {dt:.3f} s = "
          f"{blocks / dt:,.0f} blocks/s")


if __name__ == "__main__":
    main()
