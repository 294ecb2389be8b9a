"""Real-time driver: one asyncio task steps the engine core, sleeping each step's modelled time (scaled), no drift.

A step is scheduled and computed at once, then the task sleeps until ``start + duration * time_scale`` and hands the
step's tokens to each request's :class:`Stream`. The next step starts at that target time (not at the wake-up
time), so timer jitter does not accumulate; if the process falls more than ``max_lag`` behind, it resyncs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence

from llmd_kserve.engine_sim.core import EngineCore
from llmd_kserve.engine_sim.frontend import Frontend
from llmd_kserve.engine_sim.metrics import EngineMetrics

log = logging.getLogger(__name__)


class Stream:
    """One request's output channel: token ids arrive in batches; ``finish_reason`` is set when it ends."""

    __slots__ = ("req_id", "tokens", "finish_reason", "cached_tokens", "_ready", "_waiter", "arrival",
                 "first_token_at", "last_token_at", "scheduled_at", "num_prompt", "max_tokens")

    def __init__(self, req_id: str, num_prompt: int, max_tokens: int, arrival: float) -> None:
        self.req_id = req_id
        self.tokens: list[int] = []
        self.finish_reason: str | None = None
        self.cached_tokens = 0
        self._ready: list[int] = []
        self._waiter: asyncio.Future | None = None
        self.arrival = arrival
        self.first_token_at: float | None = None
        self.last_token_at = arrival
        self.scheduled_at: float | None = None
        self.num_prompt = num_prompt
        self.max_tokens = max_tokens

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _push(self, tok: int) -> None:
        self._ready.append(tok)
        self.tokens.append(tok)
        if len(self._ready) == 1:
            self._wake()

    def _finish(self, reason: str) -> None:
        self.finish_reason = reason
        self._wake()

    @property
    def done(self) -> bool:
        return self.finish_reason is not None and not self._ready

    async def next_batch(self) -> list[int]:
        """Tokens produced since the last call (waits for at least one, or for the end: then ``[]``)."""
        while not self._ready and self.finish_reason is None:
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
            self._waiter = None
        out, self._ready = self._ready, []
        return out

    async def wait(self) -> None:
        """Until the request has finished."""
        while self.finish_reason is None:
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
            self._waiter = None
        self._ready = []


class RealtimeDriver:
    """Owns the step loop of one :class:`EngineCore` on the real clock."""

    def __init__(self, core: EngineCore, metrics: EngineMetrics, *, time_scale: float = 1.0,
                 clock: Callable[[], float] = time.monotonic, max_lag: float = 0.05) -> None:
        self.core = core
        self.metrics = metrics
        self.time_scale = time_scale
        self.clock = clock
        self.max_lag = max_lag
        self.streams: dict[str, Stream] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self.steps = 0
        self.hung = False
        """Fault injection: set, the step loop stops for good (requests wait forever; HTTP still answers)."""

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="engine-step-loop")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for s in self.streams.values():
            if s.finish_reason is None:
                s._finish("abort")

    def submit(self, req_id: str, prompt: Sequence[int], max_tokens: int, *, output_len: int | None = None,
               hold_on_finish: bool = False, remote_kv: bool = False) -> Stream:
        """Queue a request in the core now; ValueError on misuse (see ``EngineCore.add_request``)."""
        now = self.clock()
        self.core.add_request(req_id, prompt, max_tokens, output_len=output_len, hold_on_finish=hold_on_finish,
                              remote_kv=remote_kv)
        stream = Stream(req_id, len(prompt), max_tokens, now)
        self.streams[req_id] = stream
        self.metrics.max_tokens.observe(max_tokens)
        self._wake.set()
        return stream

    def abort(self, req_id: str, reason: str = "abort") -> None:
        """Stop a request (client gone: ``abort``; stop string matched: ``stop``) and free its blocks."""
        stream = self.streams.pop(req_id, None)
        if self.core.abort(req_id) and stream is not None and stream.finish_reason is None:
            stream._finish(reason)
            self.metrics.success[reason] += 1

    async def _run(self) -> None:
        core, clock = self.core, self.clock
        next_t = clock()
        while True:
            if not core.has_work():
                self._wake.clear()
                await self._wake.wait()
                next_t = clock()
            if self.hung:  # a hung engine (fault injection): no step ever runs again
                await asyncio.Event().wait()
            now = clock()
            if now - next_t > self.max_lag:
                next_t = now  # starved (CPU): resync instead of bursting to catch up
            out = core.step(next_t)
            self.steps += 1
            target = next_t + out.duration * self.time_scale
            delay = target - clock()
            await asyncio.sleep(delay if delay > 0 else 0)
            self._deliver(out, target)
            next_t = target

    def _deliver(self, out, t: float) -> None:  # noqa: ANN001 - StepOutput
        m, streams = self.metrics, self.streams
        m.iteration.observe(out.num_prefill_tokens + out.num_decode_seqs)
        for rid in out.scheduled_first:
            s = streams.get(rid)
            if s is not None:
                s.scheduled_at = out.now
                s.cached_tokens = out.cached_tokens.get(rid, 0)
                m.queue.observe(out.now - s.arrival)
        itl = m.itl.observe
        for rid, tok in out.new_tokens.items():
            s = streams.get(rid)
            if s is None:
                continue
            if s.first_token_at is None:
                s.first_token_at = t
                m.ttft.observe(t - s.arrival)
            else:
                itl(t - s.last_token_at)
            s.last_token_at = t
            s._push(tok)
        for rid, reason in out.finished.items():
            s = streams.pop(rid, None)
            if s is None:
                continue
            s._finish(reason)
            m.success[reason] += 1
            m.e2e.observe(t - s.arrival)
            n = len(s.tokens)
            m.prompt_tokens.observe(s.num_prompt)
            m.gen_tokens.observe(n)
            if s.scheduled_at is not None and s.first_token_at is not None:
                m.prefill.observe(s.first_token_at - s.scheduled_at)
                m.decode.observe(t - s.first_token_at)
                if n > 1:
                    m.tpot.observe((t - s.first_token_at) / (n - 1))


async def frontend_wait(frontend: Frontend, prompt_tokens: int, time_scale: float) -> None:
    """Sleep until ``frontend`` hands a request sent now to the engine core (``Frontend.ready_at``); the engine's
    clock is the event loop's seconds divided by ``time_scale`` (> 0)."""
    now = asyncio.get_running_loop().time() / time_scale
    await asyncio.sleep(max(0.0, frontend.ready_at(now, prompt_tokens) - now) * time_scale)
