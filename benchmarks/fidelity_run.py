"""One fidelity run: a request list routed client-side over one target's replicas (virtual-time cores or HTTP)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from llmd_kserve.bench.loadgen import LoadConfig, discover_model, send_one
from llmd_kserve.bench.stats import RequestResult
from llmd_kserve.bench.workloads import RequestSpec
from llmd_kserve.cluster_sim.tokens import PrefixTokenCache
from llmd_kserve.engine_sim.core import EngineCore
from llmd_kserve.engine_sim.frontend import Frontend
from llmd_kserve.engine_sim.server import running_engine
from llmd_kserve.latency import load_profile

ROUTINGS = ("round-robin", "affinity")
POLL_S = 0.25
_COUNTERS = {"vllm:prefix_cache_queries_total": "queries", "vllm:prefix_cache_hits_total": "hits",
             "vllm:num_preemptions_total": "preemptions", "vllm:prompt_tokens_total": "prompt_tokens"}
_TTFT_HIST = {"vllm:time_to_first_token_seconds_sum": "ttft_sum", "vllm:time_to_first_token_seconds_count": "ttft_count"}
"""The engines' TTFT histogram: its sum and count give their own mean TTFT (from arrival at the engine to the first
token, without the HTTP stream back to the client)."""
PD_REQUEST = {"do_remote_decode": True, "do_remote_prefill": False, "remote_engine_id": None,
              "remote_block_ids": None, "remote_host": None, "remote_port": None}


@dataclass(frozen=True, slots=True)
class Target:
    """``kind``: sim (``parts`` = KV blocks per replica), sim-shared (the same, all on one accelerator), http (URLs), http-sim (blocks), pd-http (P, D URLs),
    pd-http-sim (P, D blocks)."""

    name: str
    kind: str
    parts: tuple[str, ...]


class Router:
    """Client-side routing: round-robin in arrival order, or each group to one replica (first-seen order mod n)."""

    def __init__(self, routing: str, n: int) -> None:
        if routing not in (*ROUTINGS, "direct"):
            raise ValueError(f"unknown routing {routing!r}")
        self.routing, self.n, self.i, self.groups = routing, n, 0, {}

    def pick(self, r: RequestSpec) -> int:
        if self.routing == "affinity" and r.group is not None:
            return self.groups.setdefault(r.group, len(self.groups)) % self.n
        self.i += 1
        return (self.i - 1) % self.n


def token_prompts(requests: Sequence[RequestSpec], vocab: int | None = None) -> list[RequestSpec]:
    """Each prompt as token ids (``SimTokenizer``'s, < 32,000), folded into ``[3, vocab)`` when a model's vocabulary
    is smaller (the tiny model's: 8,192), so that every target computes exactly the same tokens; chat turns go as
    completions of their rendered text."""
    tok = PrefixTokenCache()
    out = []
    for r in requests:
        ids = r.prompt if isinstance(r.prompt, list) else tok.encode(r.prompt, r.group)
        if vocab is not None:
            ids = [3 + i % (vocab - 3) for i in ids]
        out.append(replace(r, prompt=ids, kind="completion", messages=None))  # type: ignore[arg-type]
    return out


def _record(r: RequestSpec, endpoint: str, prompt_tokens: int) -> dict[str, Any]:
    return {"request_id": r.request_id, "ok": False, "ttft": None, "tpot": None, "prompt_tokens": prompt_tokens,
            "cached_tokens": None, "endpoint": endpoint, "error": None, "arrival_s": r.arrival_s}


def run_virtual(blocks: Sequence[int], routing: str, requests: Sequence[RequestSpec], profile: str,
                gpus: Sequence[int] | None = None, vocab: int | None = None) -> dict[str, Any]:
    """Simulated engine cores in virtual time: the front end (``engine_sim.frontend``), then the engine.

    ``gpus[i]`` is replica ``i``'s accelerator (default: one each). Replicas on one accelerator share it by
    processor sharing: while ``k`` of them have a step in flight, each step advances at ``1/k`` of its speed (time
    slicing between processes, as several vLLM servers on one GPU without MPS)."""
    prof = load_profile(profile)
    cores = [EngineCore(prof, num_blocks=b, seed=i) for i, b in enumerate(blocks)]
    frontends = [Frontend(prof) for _ in cores]
    gpu = list(gpus) if gpus is not None else list(range(len(cores)))
    if len(gpu) != len(cores):
        raise ValueError("one accelerator index per replica")
    router = Router(routing, len(cores))
    arrivals: list[tuple[float, int, RequestSpec, int, list[int]]] = []
    recs: dict[str, dict[str, Any]] = {}
    max_tokens = {r.request_id: r.max_tokens for r in requests}
    for seq, r in enumerate(sorted(token_prompts(requests, vocab), key=lambda x: x.arrival_s or 0.0)):
        e, ids = router.pick(r), list(r.prompt)
        recs[r.request_id] = _record(r, f"sim-{e}", len(ids))
        arrivals.append((frontends[e].ready_at(r.arrival_s or 0.0, len(ids)), seq, r, e, ids))
    arrivals.sort(key=lambda a: (a[0], a[1]))
    active: dict[int, list] = {}  # replica -> [remaining work (s), StepOutput]
    now = area = busy = 0.0
    q_max, ai = 0, 0

    def start(e: int) -> None:
        nonlocal q_max, area, busy
        out = cores[e].step(now)
        active[e] = [out.duration, out]
        busy += out.duration
        q_max = max(q_max, sum(c.num_waiting for c in cores))
        area += cores[e].num_waiting * out.duration

    while ai < len(arrivals) or active:
        share = {g: sum(1 for x in active if gpu[x] == g) for g in {gpu[x] for x in active}}
        done = min(active, key=lambda x: (active[x][0] * share[gpu[x]], x)) if active else None
        t_done = now + active[done][0] * share[gpu[done]] if done is not None else float("inf")
        t_arr = arrivals[ai][0] if ai < len(arrivals) else float("inf")
        t_next = min(t_arr, t_done)
        for x, st in active.items():
            st[0] -= (t_next - now) / share[gpu[x]]
        now = t_next
        if t_arr <= t_done:
            _t, _seq, r, e, ids = arrivals[ai]
            ai += 1
            cores[e].add_request(r.request_id, ids, r.max_tokens)
            if e not in active:
                start(e)
            continue
        assert done is not None
        out = active.pop(done)[1]
        for rid, c in out.cached_tokens.items():
            recs[rid]["cached_tokens"] = c
        for rid in out.first_token:
            recs[rid]["ttft"] = now - recs[rid]["arrival_s"]
            recs[rid]["ok"] = True
        for rid in out.finished:
            rec, n_out = recs[rid], max_tokens[rid]
            if rec["ttft"] is not None and n_out > 1:
                rec["tpot"] = (now - rec["arrival_s"] - rec["ttft"]) / (n_out - 1)
        if cores[done].has_work():
            start(done)
    st = [c.stats for c in cores]
    counters = {"queries": float(sum(s.prefix_queries for s in st)), "hits": float(sum(s.prefix_hits for s in st)),
                "preemptions": float(sum(s.num_preemptions for s in st)),
                "prompt_tokens": float(sum(s.prompt_tokens for s in st))}
    return {"results": list(recs.values()), "counters": counters, "queue_mean": area / now if now else 0.0,
            "queue_max": float(q_max), "engine_busy_s": busy}


async def _scrape(s: aiohttp.ClientSession, url: str) -> dict[str, float]:
    async with s.get(f"{url}/metrics") as resp:
        text = await resp.text()
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        for sm in fam.samples:
            key = (_COUNTERS.get(sm.name) or _TTFT_HIST.get(sm.name)
                   or ("waiting" if sm.name == "vllm:num_requests_waiting" else None))
            if key:
                out[key] = out.get(key, 0.0) + sm.value
    return out


async def _poll(s: aiohttp.ClientSession, urls: Sequence[str], samples: list[float], stop: asyncio.Event) -> None:
    while not stop.is_set():
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            samples.append(sum([(await _scrape(s, u)).get("waiting", 0.0) for u in urls]))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), POLL_S)


async def _pd_one(s: aiohttp.ClientSession, r: RequestSpec, pre: str, dec: str, model: str, t0: float,
                  tag: str) -> RequestResult:
    """Prefill leg (``max_tokens: 1``, ``do_remote_decode``), then the streamed decode leg with the returned params."""
    start, rid = time.perf_counter(), f"{tag}{r.request_id}"
    common = {"request_id": r.request_id, "start": start - t0, "prompt_tokens": r.prompt_tokens}
    hdr = {"x-request-id": rid}
    try:
        body = {"model": model, "prompt": r.prompt, "max_tokens": 1, "stream": False, "kv_transfer_params": PD_REQUEST}
        async with s.post(f"{pre}/v1/completions", json=body, headers=hdr) as resp:
            first = await resp.json()
            if resp.status != 200:
                return RequestResult(ok=False, error=f"prefill HTTP {resp.status}", status=resp.status, **common)
        decode_start = time.perf_counter()
        body = {"model": model, "prompt": r.prompt, "max_tokens": r.max_tokens, "stream": True, "ignore_eos": True,
                "stream_options": {"include_usage": True}, "kv_transfer_params": first.get("kv_transfer_params")}
        ttft, usage = None, {}
        async with s.post(f"{dec}/v1/completions", json=body, headers=hdr) as resp:
            async for raw in resp.content:
                line = raw.strip()
                if not line.startswith(b"data:") or line[5:].strip() == b"[DONE]":
                    continue
                ev = json.loads(line[5:])
                usage = ev.get("usage") or usage
                if ttft is None and any(c.get("text") for c in ev.get("choices") or ()):
                    ttft = time.perf_counter() - start
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        return RequestResult(ok=False, error=f"{type(exc).__name__}: {exc}", **common)
    cached = ((usage.get("prompt_tokens_details") or {}).get("cached_tokens")) if usage else None
    legs = {"prefill_s": decode_start - start, "decode_ttft_s": None if ttft is None else start + ttft - decode_start}
    return RequestResult(ok=ttft is not None, ttft=ttft, cached_tokens=cached, endpoint=dec, extra=legs, **common)


async def run_http(urls: Sequence[str], routing: str, requests: Sequence[RequestSpec], *,
                   pd: bool = False, tag: str = "", vocab: int | None = None) -> dict[str, Any]:
    """Open-loop run over HTTP: caches reset, counters scraped before and after, waiting polled meanwhile.

    Prompts go as token ids (:func:`token_prompts`, folded into ``vocab`` when given), so every target computes
    exactly the same tokens whatever its own tokenizer would make of the text. P/D requests also record their legs:
    ``prefill_s`` (the prefill answer) and ``decode_ttft_s`` (decode sent to its first token: KV pull included)."""
    urls = [u.rstrip("/") for u in urls]
    requests = token_prompts(requests, vocab)
    timeout = aiohttp.ClientTimeout(total=1800, sock_connect=10)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=0)) as s:
        model = await discover_model(s, urls[0])
        for u in urls:
            with contextlib.suppress(aiohttp.ClientError):
                async with s.post(f"{u}/reset_prefix_cache") as resp:
                    if resp.status != 200:
                        print(f"fidelity: {u}: reset_prefix_cache answered {resp.status}; cache not reset")
        before = [await _scrape(s, u) for u in urls]
        samples: list[float] = []
        stop = asyncio.Event()
        poller = asyncio.create_task(_poll(s, urls, samples, stop))
        router = Router(routing, len(urls))
        t0 = time.perf_counter()

        async def one(r: RequestSpec, url: str) -> RequestResult:
            delay = (r.arrival_s or 0.0) - (time.perf_counter() - t0)
            if delay > 0:
                await asyncio.sleep(delay)
            if pd:
                return await _pd_one(s, r, urls[0], urls[1], model, t0, tag)
            return await send_one(s, r, LoadConfig(target=url, model=model, progress=False), model, t0,
                                  run_tag=tag)

        ordered = sorted(requests, key=lambda x: x.arrival_s or 0.0)
        results = await asyncio.gather(*(one(r, urls[router.pick(r)]) for r in ordered))
        stop.set()
        await poller
        after = [await _scrape(s, u) for u in urls]
    delta = {k: sum(a.get(k, 0.0) - b.get(k, 0.0) for a, b in zip(after, before, strict=True))
             for k in (*_COUNTERS.values(), *_TTFT_HIST.values())}
    counters = {k: delta[k] for k in _COUNTERS.values()}
    engine_ttft = delta["ttft_sum"] / delta["ttft_count"] if delta["ttft_count"] else None
    recs = [{"request_id": x.request_id, "ok": x.ok, "ttft": x.ttft, "tpot": x.tpot, "prompt_tokens": len(r.prompt),
             "cached_tokens": x.cached_tokens, "endpoint": x.endpoint, "error": x.error, "arrival_s": r.arrival_s,
             **x.extra} for x, r in zip(results, ordered, strict=True)]
    return {"results": recs, "counters": counters, "queue_mean": sum(samples) / len(samples) if samples else None,
            "queue_max": max(samples) if samples else None, "engine_ttft_mean": engine_ttft}


async def run_target(t: Target, routing: str, requests: Sequence[RequestSpec], profile: str,
                     time_scale: float = 1.0, vocab: int | None = None) -> dict[str, Any]:
    """One run of ``requests`` on target ``t`` with ``routing``; the raw record ``fidelity.summarize`` reads."""
    tag = f"{t.name}-{routing}-"
    if t.kind in ("sim", "sim-shared"):
        gpus = [0] * len(t.parts) if t.kind == "sim-shared" else None
        run = run_virtual([int(b) for b in t.parts], routing, requests, profile, gpus, vocab)
    elif t.kind in ("http", "pd-http"):
        run = await run_http(t.parts, routing, requests, pd=t.kind == "pd-http", tag=tag, vocab=vocab)
    elif t.kind in ("http-sim", "pd-http-sim"):
        roles = ("prefill", "decode") if t.kind == "pd-http-sim" else ("both",) * len(t.parts)
        async with contextlib.AsyncExitStack() as stack:
            engines = [await stack.enter_async_context(running_engine(
                num_blocks=int(b), profile=profile, time_scale=time_scale, seed=i, role=role))
                for i, (b, role) in enumerate(zip(t.parts, roles, strict=True))]
            run = await run_http([e.url for e in engines], routing, requests, pd=t.kind == "pd-http-sim", tag=tag,
                                 vocab=vocab)
    else:
        raise ValueError(f"unknown target kind {t.kind!r}")
    return {"target": t.name, "kind": t.kind, "routing": routing, **run}
