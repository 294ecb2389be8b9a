"""Peak prefill throughput of a deployment, measured the way llm-d's calibration recipe does.

llm-d's ``prefix-cache-affinity-filter`` turns an endpoint's in-flight prompt tokens into a TTFT estimate with one
number per model and accelerator, ``peakPrefillThroughput`` (tokens/s). The recipe (llm-d's
``guides/recipes/router/calibration``): send warm-up, then measurement requests of exactly ``chunk`` fresh random
token ids (``--max-num-batched-tokens``, so one unloaded prefill step; fresh, so nothing is cached), one at a
time, streaming, ``max_tokens: 1``; time each to its first streamed chunk; ``peakPrefillThroughput = chunk /
median(TTFT)``. ``tau = peak * tMaxS`` is the in-flight token budget of a ``tMaxS`` TTFT tolerance.

Two smaller prompt sizes (a quarter and half of ``chunk``) also give this router's latency-profile view of the
same prefill: ``TTFT(n) = fixed + per_token * n + attn * n**2``, fitted through the three medians.

Requests go out one at a time over ``urllib`` (no event loop: notebooks can call it); ``calibrate_sim`` measures
a simulated engine of a latency profile, run in a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import statistics
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from llmd_kserve.errors import ConfigError, LlmdError

TOKEN_RANGE = (100, 10_000)
"""Token ids drawn for the prompts: inside every common vocabulary (as llm-d's recipe)."""


@dataclass(frozen=True, slots=True)
class CalibrationOptions:
    """What to measure and how often (llm-d's recipe defaults)."""

    target: str
    """Base URL of an OpenAI-compatible server: the router, or one engine."""
    model: str | None = None
    """Model name to send (default: the target's first ``/v1/models`` id)."""
    chunk: int = 8192
    """Prompt tokens per request: the engines' ``--max-num-batched-tokens``."""
    warmup: int = 5
    measurements: int = 20
    t_max_s: float = 18.0
    """TTFT tolerance for the informational ``tau``."""
    fit: bool = True
    """Also time prompts of chunk/4 and chunk/2 and fit this router's prefill-time model."""
    seed: int | None = None
    """Seed of the random prompts (None: a fresh one)."""
    timeout_s: float = 120.0
    api_key: str | None = None
    time_scale: float = 1.0
    """How many times slower than real time the target runs (a simulated engine's ``time_scale``): measured times
    are divided by it, so the numbers are the simulated GPU's."""


@dataclass(frozen=True, slots=True)
class Calibration:
    """The measurement: ``peak_prefill_throughput`` goes on ``prefix-cache-affinity-filter``."""

    target: str
    model: str
    chunk: int
    samples_s: list[float]
    median_ttft_s: float
    peak_prefill_throughput: int
    tau: int
    t_max_s: float
    prefill_fit: dict[str, float] | None = None
    """``fixed_s``, ``per_token_s``, ``attn_s`` of ``TTFT(n)``; in a latency profile, ``fixed_s`` is
    ``request_overhead_s + step_overhead_s``, ``per_token_s`` is ``per_token_s + request_overhead_per_token_s``."""
    fit_points: dict[int, float] = field(default_factory=dict)
    """Prompt tokens -> median TTFT (s) behind the fit."""

    def document(self) -> dict[str, Any]:
        """The JSON ``llmd-kserve calibrate`` prints (camelCase, as in the config it feeds)."""
        d = asdict(self)
        return {"peakPrefillThroughput": d["peak_prefill_throughput"], "medianTtftS": d["median_ttft_s"],
                "chunkSize": d["chunk"], "samplesS": d["samples_s"], "tau": d["tau"], "tMaxS": d["t_max_s"],
                "target": d["target"], "model": d["model"], "prefillFit": d["prefill_fit"],
                "fitPoints": {str(k): v for k, v in d["fit_points"].items()},
                "config": {"type": "prefix-cache-affinity-filter",
                           "parameters": {"peakPrefillThroughput": d["peak_prefill_throughput"]}}}


def _request(url: str, body: dict[str, Any] | None, api_key: str | None, timeout: float) -> Any:
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers=headers, method="POST" if data else "GET")
    try:
        return urllib.request.urlopen(req, timeout=timeout)  # noqa: S310 - the operator's own http(s) URL
    except urllib.error.HTTPError as exc:
        detail = exc.read(500).decode(errors="replace").strip()
        raise LlmdError(f"{url} answered HTTP {exc.code}: {detail}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise LlmdError(f"cannot reach {url}: {reason}") from None


def served_model(target: str, api_key: str | None = None, timeout: float = 10.0) -> str:
    """The first model id ``target`` lists at ``/v1/models``."""
    with _request(f"{target}/v1/models", None, api_key, timeout) as resp:
        data = json.load(resp).get("data") or []
    if not data:
        raise LlmdError(f"{target}/v1/models lists no model: pass --model")
    return str(data[0]["id"])


def time_to_first_chunk(target: str, model: str, token_ids: list[int], api_key: str | None = None,
                        timeout: float = 120.0) -> float:
    """Seconds from sending a streaming one-token completion of ``token_ids`` to its first data chunk."""
    body = {"model": model, "prompt": token_ids, "max_tokens": 1, "stream": True, "temperature": 0}
    start = time.monotonic()
    with _request(f"{target}/v1/completions", body, api_key, timeout) as resp:
        for line in resp:
            if line.startswith(b"data:") and b"[DONE]" not in line:
                return time.monotonic() - start
    raise LlmdError(f"{target} streamed no chunk")


def calibrate(options: CalibrationOptions, progress: Callable[[str], None] | None = None) -> Calibration:
    """Measure ``options.target`` (see the module docstring); ``progress`` gets one line per request."""
    o = options
    if o.chunk < 4 or o.measurements < 1 or o.warmup < 0 or not o.time_scale > 0:
        raise ConfigError("chunk must be >= 4, measurements >= 1, warmup >= 0, time_scale > 0", "chunk")
    target = o.target.rstrip("/")
    say = progress or (lambda _line: None)
    model = o.model or served_model(target, o.api_key)
    rng = random.Random(o.seed if o.seed is not None else time.time_ns())

    def one(n: int) -> float:
        ids = [rng.randint(*TOKEN_RANGE) for _ in range(n)]
        return time_to_first_chunk(target, model, ids, o.api_key, o.timeout_s) / o.time_scale

    say(f"target={target} model={model} chunk={o.chunk} warmup={o.warmup} measurements={o.measurements}")
    for i in range(o.warmup):
        say(f"  warmup {i + 1}: TTFT={one(o.chunk):.4f}s")
    samples = []
    for i in range(o.measurements):
        samples.append(one(o.chunk))
        say(f"  measure {i + 1}: TTFT={samples[-1]:.4f}s")
    median = statistics.median(samples)
    peak = int(o.chunk / median)
    fit, points = None, {}
    if o.fit:
        points = {o.chunk: median}
        for n in (o.chunk // 4, o.chunk // 2):
            times = [one(n) for _ in range(max(3, o.measurements // 4))]
            points[n] = statistics.median(times)
            say(f"  {n} tokens: median TTFT={points[n]:.4f}s")
        fit = fit_prefill(points)
    return Calibration(target, model, o.chunk, samples, median, peak, int(peak * o.t_max_s), o.t_max_s, fit,
                       dict(sorted(points.items())))


def fit_prefill(points: dict[int, float]) -> dict[str, float]:
    """``fixed_s``, ``per_token_s``, ``attn_s`` of the quadratic through three (tokens, TTFT) points."""
    (x0, y0), (x1, y1), (x2, y2) = sorted(points.items())
    a = ((y2 - y0) / (x2 - x0) - (y1 - y0) / (x1 - x0)) / (x2 - x1)
    b = (y1 - y0) / (x1 - x0) - a * (x0 + x1)
    return {"fixed_s": y0 - b * x0 - a * x0 * x0, "per_token_s": b, "attn_s": a}


@contextlib.contextmanager
def sim_engine(profile: str, **options: Any) -> Iterator[str]:
    """A simulated engine timed by latency profile ``profile``, on the real clock in a thread of its own; its URL."""
    from llmd_kserve.engine_sim.server import running_engine  # noqa: PLC0415 - aiohttp only when simulating

    ready = threading.Event()
    state: dict[str, Any] = {}

    async def serve() -> None:
        try:
            async with running_engine(port=0, profile=profile, **options) as eng:
                state["url"], state["loop"], state["stop"] = eng.url, asyncio.get_running_loop(), asyncio.Event()
                ready.set()
                await state["stop"].wait()
        except Exception as exc:  # noqa: BLE001 - handed to the caller's thread
            state["error"] = exc
            ready.set()

    thread = threading.Thread(target=asyncio.run, args=(serve(),), name=f"sim-engine-{profile}", daemon=True)
    thread.start()
    ready.wait(60)
    if "error" in state or "url" not in state:
        thread.join(5)
        raise state.get("error") or LlmdError(f"the simulated engine ({profile}) did not start")
    try:
        yield state["url"]
    finally:
        state["loop"].call_soon_threadsafe(state["stop"].set)
        thread.join(30)


def calibrate_sim(profile: str, progress: Callable[[str], None] | None = None, **options: Any) -> Calibration:
    """:func:`calibrate` against a simulated engine of latency profile ``profile`` (chunk: the profile's
    ``max_num_batched_tokens`` unless given; ``time_scale`` > 1 runs it slower, which makes this process's own
    overhead a smaller part of each measured time)."""
    from llmd_kserve.latency import load_profile  # noqa: PLC0415

    prof = load_profile(profile)
    options.setdefault("chunk", prof.max_num_batched_tokens)
    with sim_engine(profile, time_scale=options.get("time_scale", 1.0)) as url:
        result = calibrate(CalibrationOptions(target=url, **options), progress)
    return replace(result, target=f"sim:{profile}")
