"""``LiveDashboard``: plotly ``FigureWidget``s of a live stack, refreshed by an asyncio task of the kernel.

    dash = LiveDashboard(router_url=stack.router_url, prometheus_url=stack.prometheus_url, config="default")
    dash            # shows it; dash.start() / dash.stop(); dash.interval = 2.0; await dash.refresh_async()
    whole = await dash.settle()     # stop, refresh until nothing moves, the sample over the whole watch

Each refresh reads one :class:`~llmd_kserve.viz.data.LiveSample` from the source (Prometheus when a URL is given,
else the router itself) in a worker thread, appends it to a bounded history and redraws the figures inside
``batch_update()``. A failing source (Prometheus down, router gone) shows one line in the panel; the task keeps
trying at the next tick. Never a blocking loop: the task sleeps on the kernel's event loop between refreshes.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import ipywidgets as W

from llmd_kserve.config.schema import SchedulerConfig
from llmd_kserve.errors import LlmdError
from llmd_kserve.viz import figures
from llmd_kserve.viz.data import DecisionExplained, LiveSample
from llmd_kserve.viz.sources import PrometheusSource, RouterSource
from llmd_kserve.viz.widgets._common import Panel, StatusLine, figure_widget, kernel_loop, replace_figure


class LiveSource(Protocol):
    def sample(self) -> LiveSample: ...

    def since_start(self) -> LiveSample | None: ...


LIVE_FIGURES: dict[str, Callable[[Sequence[LiveSample]], Any]] = {
    "hit_rate": figures.hit_rate_over_time,
    "latency": figures.live_latency,
    "endpoints": figures.endpoint_heatmap,
}


class LiveDashboard(Panel):
    """Live figures of a running stack; ``source`` (anything with ``sample()``) or router/Prometheus URLs."""

    def __init__(self, router_url: str | None = None, prometheus_url: str | None = None, *,
                 source: LiveSource | None = None, config: str | Path | SchedulerConfig | None = None,
                 interval: float = 2.0, history: int = 150, show: Sequence[str] = tuple(LIVE_FIGURES),
                 explain: bool = True) -> None:
        if source is None:
            if prometheus_url:
                source = PrometheusSource(prometheus_url)
            elif router_url:
                source = RouterSource(router_url, config=config)
            else:
                raise LlmdError("LiveDashboard needs router_url=, prometheus_url= or source=")
        bad = set(show) - set(LIVE_FIGURES)
        if bad:
            raise LlmdError(f"unknown live figure(s) {sorted(bad)}; choose from {sorted(LIVE_FIGURES)}")
        self.source = source
        self.router = RouterSource(router_url, config=config) if router_url and explain else None
        self.samples: deque[LiveSample] = deque(maxlen=history)
        self.refreshes = 0
        self.errors = 0
        self._task: asyncio.Task | None = None
        self.status = StatusLine()
        self.figures = {name: figure_widget(LIVE_FIGURES[name]([])) for name in show}
        self.decision_figure = figure_widget(figures.decision_explained(_EMPTY)) if self.router else None
        self.interval_box = W.BoundedFloatText(value=interval, min=0.2, max=60.0, step=0.5, description="every (s)",
                                               layout=W.Layout(width="170px"))
        self.start_button = W.Button(description="Start", icon="play", button_style="success")
        self.stop_button = W.Button(description="Stop", icon="stop", disabled=True)
        self.start_button.on_click(lambda _: self.start())
        self.stop_button.on_click(lambda _: self.stop())
        self.numbers = W.HTML()
        figs = list(self.figures.values()) + ([self.decision_figure] if self.decision_figure is not None else [])
        self.widget = W.VBox([W.HBox([self.start_button, self.stop_button, self.interval_box, self.numbers]),
                              self.status.widget, *figs])
        self.status.show(f"source: {getattr(source, 'url', type(source).__name__)} — press Start or call start()")

    # --- state ------------------------------------------------------------------------------------------------------
    @property
    def interval(self) -> float:
        return float(self.interval_box.value)

    @interval.setter
    def interval(self, seconds: float) -> None:
        self.interval_box.value = seconds

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def latest(self) -> LiveSample | None:
        return self.samples[-1] if self.samples else None

    def since_start(self) -> LiveSample | None:
        """One sample over the whole time the dashboard has watched (first to latest refresh)."""
        return self.source.since_start()

    # --- refresh ------------------------------------------------------------------------------------------------------
    def _draw(self, sample: LiveSample, decision: DecisionExplained | None) -> None:
        self.samples.append(sample)
        hist = list(self.samples)
        for name, widget in self.figures.items():
            replace_figure(widget, LIVE_FIGURES[name](hist))
        if decision is not None and self.decision_figure is not None:
            replace_figure(self.decision_figure, figures.decision_explained(decision))
        self.numbers.value = _numbers(sample, self.source.since_start())

    def _read(self) -> tuple[LiveSample, DecisionExplained | None]:
        sample = self.source.sample()
        decision = None
        if self.router is not None:
            with contextlib.suppress(LlmdError):  # no decision yet is not an error
                decision = self.router.explain()
        return sample, decision

    def refresh(self) -> LiveSample | None:
        """One refresh now, in this thread; None (and the error line) if the source failed."""
        try:
            sample, decision = self._read()
        except Exception as exc:  # noqa: BLE001 - shown in the panel as one line
            return self._failed(exc)
        self._draw(sample, decision)
        return sample

    async def refresh_async(self) -> LiveSample | None:
        """One refresh with the source read in a worker thread (the kernel stays responsive)."""
        try:
            sample, decision = await asyncio.to_thread(self._read)
        except Exception as exc:  # noqa: BLE001
            return self._failed(exc)
        self._draw(sample, decision)
        return sample

    def _failed(self, exc: BaseException) -> None:
        self.errors += 1
        self.status.error(exc)
        return None

    async def _loop(self) -> None:
        while True:
            t0 = time.monotonic()
            if await self.refresh_async() is not None:
                self.refreshes += 1
                self.status.ok(f"live: {self.refreshes} refreshes every {self.interval:g} s "
                               f"from {self.latest.source if self.latest else ''}")
            await asyncio.sleep(max(0.0, self.interval - (time.monotonic() - t0)))

    def start(self) -> LiveDashboard:
        """Start refreshing every ``interval`` seconds (a task on the kernel's event loop); no-op if running."""
        if not self.running:
            self._task = kernel_loop().create_task(self._loop())
            self._task.add_done_callback(self._ended)
        self.start_button.disabled, self.stop_button.disabled = True, False
        return self

    def stop(self) -> LiveDashboard:
        """Cancel the refresh task (the figures keep their last state)."""
        if self._task is not None:
            self._task.cancel()
        self._task = None
        self.start_button.disabled, self.stop_button.disabled = False, True
        self.status.show(f"stopped after {self.refreshes} refreshes")
        return self

    async def settle(self, quiet: int = 2, timeout: float = 20.0) -> LiveSample | None:
        """Stop the task, then refresh every ``interval`` until ``quiet`` windows in a row saw no new requests and
        no prefix-cache queries (the source has counted everything sent so far); the whole-run sample."""
        self.stop()
        deadline, calm = time.monotonic() + timeout, 0
        while calm < quiet and time.monotonic() < deadline:
            await asyncio.sleep(self.interval)
            s = await self.refresh_async()
            busy = s is None or bool(s.throughput_rps) or s.hit_rate_engines is not None
            calm = 0 if busy else calm + 1
        self.status.show(f"settled after {len(self.samples)} samples" if calm >= quiet else
                         f"still moving after {timeout:g} s")
        return self.since_start()

    def _ended(self, task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None:  # a bug, not a source failure
            self.status.error(task.exception())  # type: ignore[arg-type]
            self.start_button.disabled, self.stop_button.disabled = False, True


def _numbers(s: LiveSample, whole: LiveSample | None) -> str:
    """The headline next to the buttons: hit rates since the dashboard started, latency and rate of the last window."""
    def pct(v: float | None) -> str:
        return "–" if v is None else f"{v * 100:.1f}%"

    def ms(v: float | None) -> str:
        return "–" if v is None else f"{v * 1000:.0f} ms"

    w = whole or s
    rps = "–" if s.throughput_rps is None else f"{s.throughput_rps:.1f} req/s"
    text = f"hit rate {pct(w.hit_rate_engines)} (router predicted {pct(w.hit_rate_predicted)}) · last window: " \
           f"TTFT p90 {ms(s.ttft.p90)}, {rps}"
    if w.pd_share:  # None or 0 on an aggregated stack
        text += f" · P/D share {pct(w.pd_share)}"
    return f"<b>{text}</b>"


_EMPTY = DecisionExplained("", "", "", None, (), (), {})
