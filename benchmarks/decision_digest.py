"""A digest of every decision of a fixed mixed workload per shipped config, to check that a change decides the same.

Workload (seeded): text prompts sharing five long prefixes, repeated texts, chat bodies, token-id prompts; engines
cache what they served (``BlockStored`` with token ids into the KV index); completions in random order; metrics
scraped at random times (before and after the router's charges). A decision's digest covers target, prefill
endpoint, prompt tokens, predicted cached tokens and every candidate's total (to 1e-9).

Usage: run it on two trees and compare the output, e.g.
  PYTHONPATH=/tmp/old python benchmarks/decision_digest.py > old.json; PYTHONPATH=$PWD python ... > new.json
"""

from __future__ import annotations

import hashlib
import json
import random
import sys

from llmd_kserve.config.build import build_scheduler
from llmd_kserve.kvcache.events import BlockStored
from llmd_kserve.kvcache.index import KVIndex
from llmd_kserve.latency import load_profile
from llmd_kserve.plugins.base import PluginContext
from llmd_kserve.scheduling.interface import SchedulingResult
from llmd_kserve.tokenizer import SimTokenizer
from llmd_kserve.types import Endpoint, EndpointId, EndpointMetrics, EndpointState, LLMRequest, RequestOutcome

CONFIGS = "default,precise-prefix,approx-prefix,load-only,round-robin,random,pd-always,pd-never,pd-predicted-ttft,pd-uncached"


def _endpoints(rng: random.Random, now: float, pd: bool) -> list[EndpointState]:
    return [EndpointState(Endpoint(EndpointId(f"http://e{n}:8000"),
                                   role=("prefill" if n < 2 else "decode") if pd else "both"),
                          EndpointMetrics(waiting=rng.randrange(4), running=rng.randrange(40), kv_usage=rng.random(),
                                          num_gpu_blocks=3000, stale=False, scraped_at=now - rng.random()))
            for n in range(6)]


def digest(config: str, n: int = 300) -> str:
    """Digest of ``n`` decisions of the workload under ``config``."""
    rng = random.Random(42)
    clock = [0.0]
    index = KVIndex(max_keys=200_000)
    tok = SimTokenizer()
    ctx = PluginContext(tokenizer=tok, index=index, rng=random.Random(1), clock=lambda: clock[0],
                        profile=load_profile(), block_size=16)
    sched = build_scheduler(config, ctx)
    words = ["".join(rng.choice("abcdefghij") for _ in range(rng.randint(1, 9))) for _ in range(3000)]
    systems = [" ".join(rng.choice(words) for _ in range(rng.choice([300, 1500]))) for _ in range(5)]
    recent: list[str] = []
    inflight: list[tuple[LLMRequest, SchedulingResult]] = []
    h = hashlib.sha256()
    for i in range(n):
        clock[0] += rng.choice([0.001, 0.01, 0.1, 0.5])
        eps = _endpoints(rng, clock[0], config.startswith("pd"))
        r = rng.random()
        if r < 0.5:
            text = rng.choice(systems) + " " + " ".join(rng.choice(words) for _ in range(rng.randrange(1, 400)))
            req = LLMRequest(f"r{i}", "m", {"prompt": text})
            recent.append(text)
        elif r < 0.65 and recent:
            req = LLMRequest(f"r{i}", "m", {"prompt": rng.choice(recent)})  # a repeated text
        elif r < 0.8:
            content = rng.choice(systems)[: rng.randrange(10, 3000)]
            req = LLMRequest(f"r{i}", "m", {"messages": [{"role": "user", "content": content}]}, kind="chat")
        else:
            ids = (tok.encode(rng.choice(systems))[: rng.randrange(1, 600)]
                   + [rng.randrange(3, 32000) for _ in range(rng.randrange(0, 200))])
            req = LLMRequest(f"r{i}", "m", {}, token_ids=tuple(ids))
        res = sched.schedule(req, eps)
        h.update(json.dumps([res.target, res.prefill, res.prompt_tokens, res.predicted_cached_tokens,
                             {k: round(v, 9) for k, v in res.totals.items()}], sort_keys=True).encode())
        if req.token_ids is not None:  # the engine caches what it served: KV events with its token ids
            served = list(req.token_ids)
        elif req.kind == "chat":
            served = tok.encode(tok.apply_chat_template(req.body["messages"]))
        else:
            served = tok.encode(req.body["prompt"])
        blocks = len(served) // 16
        if blocks and rng.random() < 0.7:
            hashes = [hash((res.target, i, j)) for j in range(blocks)]
            index.apply(res.target, [BlockStored(hashes, None, served[: blocks * 16], 16)])
        inflight.append((req, res))
        while inflight and rng.random() < 0.5:
            q, s = inflight.pop(rng.randrange(len(inflight)))
            if s.prefill is not None:
                sched.on_prefill_complete(q, s, RequestOutcome(ok=True))
            sched.on_complete(q, s, RequestOutcome(ok=True))
    return h.hexdigest()[:16]


if __name__ == "__main__":
    print(json.dumps({c: digest(c) for c in (sys.argv[1] if len(sys.argv) > 1 else CONFIGS).split(",")}, indent=1))
