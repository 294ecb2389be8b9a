"""Load generator: streams a workload to an OpenAI-compatible URL over HTTP and measures every request.

Public API::

    LoadConfig(target, model=None, timeout_s=600, engine_urls=(), ignore_eos=True, progress=True, headers={})
    RunResult    label, arrival, results (list[RequestResult]), wall_s, engine_hit_rate, engine_counters
                 ``.summary(slo)`` -> stats.summarize(...)
    await run_load(requests, arrival, config, on_result=None) -> RunResult   one run (open or closed loop)
    await run_sweep(requests_by_arrival, config) -> list[RunResult]   sequential runs
    run_load_sync(requests, arrival, config) -> RunResult             ``asyncio.run`` wrapper
    await scrape_prefix_counters(session, engine_urls) -> (queries, hits)   sums of vLLM prefix-cache counters
    await discover_model(session, target) -> str                      first id of ``GET /v1/models``
    await discover_max_model_len(session, target, model=None) -> int | None   its card's ``max_model_len``

Requests go to ``/v1/completions`` (``kind == "completion"``) or ``/v1/chat/completions`` with ``stream: true`` and
``stream_options.include_usage`` so the final chunk's ``usage.prompt_tokens_details.cached_tokens`` gives the
per-request cache hits; the engine counters' delta gives the engine-side hit rate. TTFT is the time to the first
content chunk, ITL the gaps between content chunks, E2E the time to the end of the stream. 429/503 count as shed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import msgspec
from prometheus_client.parser import text_string_to_metric_families
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from llmd_kserve.aio import run
from llmd_kserve.bench.stats import SLO, RequestResult, summarize
from llmd_kserve.bench.workloads import ArrivalSpec, RequestSpec
from llmd_kserve.errors import LlmdError

log = logging.getLogger(__name__)
_QUERIES, _HITS = "vllm:prefix_cache_queries", "vllm:prefix_cache_hits"
_json_decode = msgspec.json.Decoder().decode


@dataclass(frozen=True, slots=True)
class LoadConfig:
    """Where and how to send: ``target`` is the router's (or an engine's) base URL."""

    target: str
    model: str | None = None
    timeout_s: float = 600.0
    engine_urls: Sequence[str] = ()
    ignore_eos: bool = True
    progress: bool = True
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RunResult:
    """One run of a workload at one arrival setting."""

    label: str
    arrival: ArrivalSpec
    results: list[RequestResult]
    wall_s: float
    engine_hit_rate: float | None = None
    engine_counters: Mapping[str, float] = field(default_factory=dict)

    def summary(self, slo: SLO | None = None) -> dict[str, Any]:
        return summarize(self.results, self.wall_s, slo, engine_hit_rate=self.engine_hit_rate)


async def discover_model(session: aiohttp.ClientSession, target: str) -> str:
    """The first model id the target serves."""
    url = f"{target.rstrip('/')}/v1/models"
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=30)) as resp:
            resp.raise_for_status()
            data = await resp.json(content_type=None)
        return str(data["data"][0]["id"])
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        raise LlmdError(f"cannot reach target {target}: GET {url} failed: {exc or type(exc).__name__}") from exc
    except (KeyError, IndexError, TypeError) as exc:
        raise LlmdError(f"target {target} lists no model at {url} (give --model)") from exc


async def discover_max_model_len(session: aiohttp.ClientSession, target: str, model: str | None = None) -> int | None:
    """The ``max_model_len`` the target's ``GET /v1/models`` card reports for ``model`` (or its first model), as
    vLLM does; None when it reports none or cannot be asked."""
    try:
        async with session.get(f"{target.rstrip('/')}/v1/models", timeout=aiohttp.ClientTimeout(total=30)) as resp:
            cards = (await resp.json(content_type=None)).get("data") or [] if resp.status == 200 else []
    except (aiohttp.ClientError, TimeoutError, ValueError, AttributeError) as exc:
        log.warning("cannot ask %s for its context length: %s", target, exc)
        return None
    card = next((c for c in cards if isinstance(c, dict) and (model is None or c.get("id") == model)), None)
    value = card.get("max_model_len") if card else None
    return int(value) if isinstance(value, int) and value > 0 else None


async def scrape_prefix_counters(session: aiohttp.ClientSession, engine_urls: Sequence[str]) -> tuple[float, float]:
    """Sum of ``vllm:prefix_cache_{queries,hits}_total`` over the engines (unreachable ones count 0)."""
    queries = hits = 0.0
    for url in engine_urls:
        try:
            async with session.get(f"{url.split('#')[0].rstrip('/')}/metrics") as resp:
                text = await resp.text()
        except (TimeoutError, aiohttp.ClientError) as exc:
            log.warning("cannot scrape %s: %s", url, exc)
            continue
        for fam in text_string_to_metric_families(text):
            if fam.name in (_QUERIES, _HITS):
                total = sum(s.value for s in fam.samples if s.name.endswith("_total"))
                if fam.name == _QUERIES:
                    queries += total
                else:
                    hits += total
    return queries, hits


def _body(spec: RequestSpec, model: str, ignore_eos: bool) -> tuple[str, dict[str, Any]]:
    body: dict[str, Any] = {"model": model, "max_tokens": spec.max_tokens, "stream": True,
                            "stream_options": {"include_usage": True}}
    if ignore_eos:
        body["ignore_eos"] = True
    if spec.kind == "chat":
        body["messages"] = spec.openai_messages()
        return "/v1/chat/completions", body
    body["prompt"] = spec.prompt
    return "/v1/completions", body


async def send_one(session: aiohttp.ClientSession, spec: RequestSpec, config: LoadConfig, model: str,
                   t0: float, clock: Callable[[], float] = time.perf_counter, run_tag: str = "") -> RequestResult:
    """Send one streaming request and measure it; failures are returned as results with ``ok=False``."""
    path, body = _body(spec, model, config.ignore_eos)
    rid = f"{run_tag}{spec.request_id}"
    start = clock()
    ttft: float | None = None
    last = start
    itl: list[float] = []
    chunks = 0
    usage: Mapping[str, Any] | None = None
    endpoint = None
    common = {"request_id": spec.request_id, "start": start - t0, "prompt_tokens": spec.prompt_tokens}
    try:
        headers = {"x-request-id": rid, **config.headers}
        async with session.post(f"{config.target.rstrip('/')}{path}", json=body, headers=headers) as resp:
            endpoint = resp.headers.get("x-llmd-endpoint")
            if resp.status != 200:
                text = (await resp.text())[:300]
                return RequestResult(ok=False, error=f"HTTP {resp.status}: {text}", status=resp.status,
                                     shed=resp.status in (429, 503), endpoint=endpoint, **common)
            async for raw in resp.content:
                line = raw.strip()
                if not line.startswith(b"data:"):
                    continue
                payload = line[5:].strip()
                if payload == b"[DONE]":
                    break
                event = _json_decode(payload)
                if event.get("error"):
                    raise RuntimeError(str(event["error"]))
                if event.get("usage"):
                    usage = event["usage"]
                for choice in event.get("choices") or ():
                    piece = choice.get("text") if "text" in choice else (choice.get("delta") or {}).get("content")
                    if piece:
                        now = clock()
                        if ttft is None:
                            ttft = now - start
                        else:
                            itl.append(now - last)
                        last = now
                        chunks += 1
        end = clock()
    except (TimeoutError, aiohttp.ClientError, RuntimeError, msgspec.DecodeError) as exc:
        return RequestResult(ok=False, error=f"{type(exc).__name__}: {exc}", endpoint=endpoint, **common)
    details = (usage or {}).get("prompt_tokens_details") or {}
    cached = details.get("cached_tokens") if usage else None
    if usage and usage.get("prompt_tokens"):
        common["prompt_tokens"] = int(usage["prompt_tokens"])
    out_tokens = int(usage["completion_tokens"]) if usage and usage.get("completion_tokens") is not None else chunks
    if ttft is None:
        return RequestResult(ok=False, error="stream ended without tokens", status=200, endpoint=endpoint, **common)
    return RequestResult(ok=True, ttft=ttft, e2e=end - start, itl=tuple(itl), output_tokens=out_tokens,
                         cached_tokens=None if cached is None else int(cached), endpoint=endpoint, status=200,
                         **common)


def _progress(enabled: bool) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    transient=True, disable=not enabled)


async def run_load(requests: Sequence[RequestSpec], arrival: ArrivalSpec, config: LoadConfig, *,
                   clock: Callable[[], float] = time.perf_counter, run_tag: str = "",
                   on_result: Callable[[RequestResult], None] | None = None) -> RunResult:
    """Run one workload: open loop (each request at its ``arrival_s``) or closed loop (``arrival.concurrency``).
    ``on_result`` sees each request's result as it finishes (e.g. a notebook progress bar)."""
    timeout = aiohttp.ClientTimeout(total=config.timeout_s, sock_connect=10)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=0)) as session:
        model = config.model or await discover_model(session, config.target)
        before = await scrape_prefix_counters(session, config.engine_urls) if config.engine_urls else None
        results: list[RequestResult] = []
        with _progress(config.progress) as progress:
            bar = progress.add_task(arrival.label, total=len(requests))

            async def one(spec: RequestSpec) -> None:
                results.append(await send_one(session, spec, config, model, t0, clock, run_tag))
                progress.advance(bar)
                if on_result is not None:
                    on_result(results[-1])

            t0 = clock()
            if arrival.pattern == "concurrency":
                queue: asyncio.Queue[RequestSpec] = asyncio.Queue()
                for spec in requests:
                    queue.put_nowait(spec)

                async def worker() -> None:
                    while not queue.empty():
                        await one(queue.get_nowait())

                await asyncio.gather(*(worker() for _ in range(arrival.concurrency or 1)))
            else:
                tasks = []
                for spec in sorted(requests, key=lambda r: r.arrival_s or 0.0):
                    delay = (spec.arrival_s or 0.0) - (clock() - t0)
                    if delay > 0:
                        await asyncio.sleep(delay)
                    tasks.append(asyncio.create_task(one(spec)))
                await asyncio.gather(*tasks)
            wall = clock() - t0
        hit_rate, counters = None, {}
        if before is not None:
            after = await scrape_prefix_counters(session, config.engine_urls)
            dq, dh = after[0] - before[0], after[1] - before[1]
            counters = {"prefix_cache_queries": dq, "prefix_cache_hits": dh}
            hit_rate = dh / dq if dq > 0 else None
    results.sort(key=lambda r: r.start)
    return RunResult(arrival.label, arrival, results, wall, hit_rate, counters)


async def run_sweep(runs: Sequence[tuple[ArrivalSpec, Sequence[RequestSpec]]], config: LoadConfig) -> list[RunResult]:
    """Run each (arrival, requests) pair in turn; request ids are prefixed per run so they stay unique."""
    return [await run_load(reqs, arr, config, run_tag=f"run{i}-") for i, (arr, reqs) in enumerate(runs)]


def run_load_sync(requests: Sequence[RequestSpec], arrival: ArrivalSpec, config: LoadConfig) -> RunResult:
    """``run_load`` for scripts and notebooks without a running loop."""
    return run(run_load(requests, arrival, config))
