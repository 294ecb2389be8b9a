"""``llmd-kserve dashboard``: the live figures as a web page outside Jupyter (aiohttp, plotly.js served locally).

The server samples a live source (a Prometheus, else the router itself) every ``interval`` seconds in the
background, keeps the last ``history`` samples, and answers ``GET /api/figures`` with the figures of
:mod:`llmd_kserve.viz.figures` as plotly JSON; the page (``GET /``) redraws them with ``Plotly.react``. plotly.js is
served from the installed ``plotly`` package (``/plotly.min.js``): the page works offline, no CDN. A source that
fails shows as one line on the page; the last figures stay.

The page has no login: whoever reaches it sees what its API key can read. It answers only requests whose ``Host``
is an IP address, ``localhost`` or the name it listens on, and no cross-site ``Origin`` (so a web page elsewhere
cannot read it through DNS rebinding).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from llmd_kserve.errors import ConfigError
from llmd_kserve.http_errors import Handler
from llmd_kserve.router.browser import browser_refusal
from llmd_kserve.viz import figures
from llmd_kserve.viz.data import LiveSample, explain_decision
from llmd_kserve.viz.sources import PrometheusSource, RouterSource, SourceError

log = logging.getLogger(__name__)
FIGURES = ("hit_rate", "latency", "endpoints", "decision")

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>llmd-kserve live dashboard</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<script src="plotly.min.js"></script>
<style>
 body { font-family: system-ui, sans-serif; margin: 0 1.5rem 2rem; color: #222; }
 header { display: flex; gap: 1.5rem; align-items: baseline; flex-wrap: wrap; }
 #status { color: #555; } #error { color: #b00020; min-height: 1.2em; }
 .grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(560px, 1fr)); gap: 1rem; }
 .fig { min-height: 380px; border: 1px solid #eee; border-radius: 6px; }
 #summary span { margin-right: 1.2rem; }
</style></head>
<body>
<header><h2>llmd-kserve live dashboard</h2><span id="source">__SOURCE__</span>
<span id="status">waiting for the first sample…</span></header>
<div id="error" role="alert"></div>
<div id="summary"></div>
<div class="grid">
 <div id="fig-hit_rate" class="fig"></div><div id="fig-latency" class="fig"></div>
 <div id="fig-endpoints" class="fig"></div><div id="fig-decision" class="fig"></div>
</div>
<script>
const interval = __INTERVAL_MS__;
function esc(v) { return String(v).replace(/&/g, "&amp;").replace(/</g, "&lt;"); }
function pct(v) { return v === null || v === undefined ? "–" : (100 * v).toFixed(1) + "%"; }
function num(v, unit) { return v === null || v === undefined ? "–" : v.toFixed(2) + unit; }
async function refresh() {
  try {
    const r = await fetch("api/figures", {cache: "no-store"});
    const body = await r.json();
    document.getElementById("error").textContent = body.error || "";
    const s = body.summary || {};
    document.getElementById("summary").innerHTML =
      `<span>hit rate (engines) <b id="hit-engines">${pct(s.hit_rate_engines)}</b></span>` +
      `<span>router predicted <b>${pct(s.hit_rate_predicted)}</b></span>` +
      `<span>throughput <b>${num(s.throughput_rps, " req/s")}</b></span>` +
      `<span>config <b>${esc(s.config_hash || "–")}</b></span>`;
    for (const [name, fig] of Object.entries(body.figures || {})) {
      Plotly.react("fig-" + name, fig.data, fig.layout, {responsive: true, displaylogo: false});
    }
    document.getElementById("status").textContent =
      `${body.samples} samples · updated ${new Date(1000 * body.time).toLocaleTimeString()}`;
    document.body.dataset.samples = body.samples;
  } catch (e) {
    document.getElementById("error").textContent = "dashboard server not answering: " + e;
  }
}
refresh(); setInterval(refresh, interval);
</script></body></html>
"""


class Dashboard:
    """Samples a live source in the background and renders the live figures on demand."""

    def __init__(self, router: str, prometheus: str | None = None, interval: float = 2.0, history: int = 300,
                 timeout: float = 2.0, clock: Callable[[], float] = time.time, api_key: str | None = None) -> None:
        if not interval > 0:
            raise ConfigError(f"must be > 0, got {interval}", "interval")
        self.router = RouterSource(router, timeout=timeout, clock=clock, api_key=api_key)
        self.source: RouterSource | PrometheusSource = (
            PrometheusSource(prometheus, timeout=timeout, clock=clock) if prometheus else self.router)
        self.interval = interval
        self.samples: deque[LiveSample] = deque(maxlen=max(2, history))
        self.decision: dict[str, Any] | None = None
        self.error: str | None = None
        self._clock = clock

    @property
    def source_label(self) -> str:
        kind = "Prometheus" if isinstance(self.source, PrometheusSource) else "router"
        return f"{kind} {self.source.url}" + ("" if self.source is self.router else f" · router {self.router.url}")

    async def refresh(self) -> None:
        """One sample (and the newest routing decision); a failing source sets ``error`` to one line."""
        errors = []
        try:
            self.samples.append(await asyncio.to_thread(self.source.sample))
        except SourceError as exc:
            errors.append(str(exc))
        try:
            recent = await asyncio.to_thread(self.router.decisions, 1)
            if recent:
                self.decision = recent[-1]
        except SourceError as exc:
            if self.source is not self.router:
                errors.append(str(exc))
        self.error = "; ".join(errors) or None

    async def run(self) -> None:
        while True:
            try:
                await self.refresh()
            except Exception as exc:  # never let the loop die; say it on the page
                log.exception("dashboard refresh failed")
                self.error = f"refresh failed: {type(exc).__name__}: {exc}"
            await asyncio.sleep(self.interval)

    def figures(self) -> dict[str, Any]:
        """Figure name -> plotly figure of the samples so far (the decision figure once a decision was logged)."""
        samples = list(self.samples)
        out: dict[str, Any] = {"hit_rate": figures.hit_rate_over_time(samples),
                               "latency": figures.live_latency(samples),
                               "endpoints": figures.endpoint_heatmap(samples)}
        d = self.decision
        if d is not None and d.get("weights"):
            try:
                out["decision"] = figures.decision_explained(explain_decision(d, d["weights"]))
            except (KeyError, ValueError, TypeError) as exc:  # a decision the figure cannot read
                self.error = self.error or f"cannot explain the last decision: {exc}"
        return out

    def payload(self) -> bytes:
        """The JSON of ``GET /api/figures``: time, error line, summary numbers and each figure's plotly JSON."""
        last = self.samples[-1] if self.samples else None
        summary = {} if last is None else {
            "hit_rate_engines": last.hit_rate_engines, "hit_rate_predicted": last.hit_rate_predicted,
            "hit_rate_reported": last.hit_rate_reported, "throughput_rps": last.throughput_rps}
        if self.decision is not None:
            summary["config_hash"] = self.decision.get("config_hash")
        head = json.dumps({"time": self._clock(), "error": self.error, "samples": len(self.samples),
                           "source": self.source_label, "summary": summary})
        figs = ",".join(f"{json.dumps(name)}:{fig.to_json()}" for name, fig in self.figures().items())
        return (head[:-1] + ',"figures":{' + figs + "}}").encode()


_PLOTLY_JS: bytes | None = None


def _plotly_js() -> bytes:
    global _PLOTLY_JS
    if _PLOTLY_JS is None:
        from plotly.offline import get_plotlyjs

        _PLOTLY_JS = get_plotlyjs().encode()
    return _PLOTLY_JS


def build_app(dash: Dashboard, listen_host: str | None = None) -> web.Application:
    """``/`` the page, ``/plotly.min.js``, ``/api/figures``; the sampling task runs while the app does.
    ``listen_host``: a name accepted as ``Host`` besides IP addresses and localhost."""
    page = _PAGE.replace("__INTERVAL_MS__", str(int(dash.interval * 1000))).replace(
        "__SOURCE__", dash.source_label.replace("&", "&amp;").replace("<", "&lt;"))

    async def index(_: web.Request) -> web.Response:
        return web.Response(text=page, content_type="text/html")

    async def plotly_js(_: web.Request) -> web.Response:
        return web.Response(body=_plotly_js(), content_type="application/javascript",
                            headers={"Cache-Control": "max-age=86400"})

    async def api(_: web.Request) -> web.Response:
        return web.Response(body=await asyncio.to_thread(dash.payload), content_type="application/json",
                            headers={"Cache-Control": "no-store"})

    async def sampling(_: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(dash.run(), name="dashboard-sampling")
        yield
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    @web.middleware
    async def same_site_only(request: web.Request, handler: Handler) -> web.StreamResponse:
        why = browser_refusal(request.headers, listen_host)
        if why is not None:
            return web.Response(text=why + "\n", status=403)
        return await handler(request)

    app = web.Application(middlewares=[same_site_only])
    app.cleanup_ctx.append(sampling)
    app.router.add_get("/", index)
    app.router.add_get("/plotly.min.js", plotly_js)
    app.router.add_get("/api/figures", api)
    return app


@dataclass(frozen=True, slots=True)
class RunningDashboard:
    url: str
    dashboard: Dashboard


@contextlib.asynccontextmanager
async def running_dashboard(router: str, prometheus: str | None = None, host: str = "127.0.0.1", port: int = 0,
                            interval: float = 2.0, api_key: str | None = None) -> AsyncIterator[RunningDashboard]:
    """Serve the dashboard in this event loop (``port=0``: a free port; ``api_key`` for a router with keys)."""
    dash = Dashboard(router, prometheus, interval, api_key=api_key)
    runner = web.AppRunner(build_app(dash, host), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except OSError as exc:
            raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}", "port") from exc
        yield RunningDashboard(f"http://{host}:{runner.addresses[0][1]}", dash)
    finally:
        await runner.cleanup()


def serve(router: str, prometheus: str | None = None, host: str = "127.0.0.1", port: int = 8050,
          interval: float = 2.0, api_key: str | None = None) -> int:
    """Run the dashboard until SIGINT/SIGTERM (blocking; ``llmd-kserve dashboard``)."""
    from llmd_kserve.aio import run, stop_on_signals

    async def main() -> None:
        stop = stop_on_signals()
        async with running_dashboard(router, prometheus, host, port, interval, api_key) as d:
            print(f"llmd-kserve dashboard on {d.url} ({d.dashboard.source_label})", flush=True)
            await stop.wait()

    run(main())
    return 0
