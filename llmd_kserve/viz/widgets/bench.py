"""``BenchPanel``: run a workload at one rate or a sweep under several policies, live against the stack or in the
virtual-time cluster simulator, with a progress bar; draws the report figures; every run is kept side by side.

    bench = BenchPanel(stack_panel)                     # or BenchPanel(router_url=…, engine_urls=[…]) (one policy)
    bench                                               # set workload/rates/policies in the panel, press Run, or:
    report = await bench.run(policies=["round-robin", "default"], rates=[4, 8], num_requests=40)

Live runs with several policies restart the stack's router per policy and reset the engines' prefix caches first
(as ``llmd-kserve demo`` does), so each policy starts cold. ``sim=True`` runs the same requests in
``cluster_sim`` on ``sim_engines`` engines instead (seconds for thousands of requests).

A trace replays with its own timestamps: ``BenchPanel(trace="conversation_trace.jsonl", time_scale=0.5,
max_requests=500)`` (or ``workload=load_trace(...)``) with no rates (an empty rates box) runs one replay per
policy; rates replay the trace's prompts at those Poisson rates instead. Requests are fitted to the engines'
context (the simulated engines', or what the router's ``/v1/models`` reports) and the status line says how many
were clipped.
"""

from __future__ import annotations

import asyncio
import random
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import ipywidgets as W

from llmd_kserve.bench.report import build_report, run_entry_from
from llmd_kserve.bench.runner import make_spec, sim_context_len, target_context, workload_info
from llmd_kserve.bench.stats import SLO
from llmd_kserve.bench.workloads import (
    ArrivalSpec,
    TraceSpec,
    WorkloadSpec,
    assign_arrivals,
    build_requests,
    fit_summary,
    load_trace,
)
from llmd_kserve.config.loader import shipped_configs
from llmd_kserve.errors import ConfigError, LlmdError
from llmd_kserve.viz import figures
from llmd_kserve.viz.data import RunPoint, run_points
from llmd_kserve.viz.widgets._common import PANEL_SLO, Panel, StatusLine, figure_widget, kernel_loop, replace_figure

BENCH_FIGURES = ("ttft", "goodput", "throughput", "pareto")


class BenchPanel(Panel):
    """Benchmarks from a notebook; ``reports`` holds every finished run's bench JSON document."""

    def __init__(self, stack: Any = None, *, router_url: str | None = None, engine_urls: Sequence[str] = (),
                 workload: str | WorkloadSpec = "shared-prefix", rates: Sequence[float] = (4.0, 8.0),
                 num_requests: int | None = None, policies: Sequence[str] = ("default",), sim: bool = False,
                 sim_engines: int = 4, sim_num_blocks: int | None = None, slo: SLO = PANEL_SLO,
                 seed: int = 0, trace: str | Path | None = None, time_scale: float = 1.0,
                 max_requests: int | None = None) -> None:
        self.stack = stack
        self._router_url, self._engine_urls = router_url, list(engine_urls)
        if trace is not None:
            workload = load_trace(trace, time_scale=time_scale, max_requests=max_requests)
            rates = ()
        self.spec = workload if not isinstance(workload, str) else None
        self.slo, self.seed, self.sim_engines, self.sim_num_blocks = slo, seed, sim_engines, sim_num_blocks
        self.reports: list[dict[str, Any]] = []
        self.status = StatusLine()
        is_trace = isinstance(self.spec, TraceSpec)
        self.workload = W.Dropdown(options=["shared-prefix", "chat", "rag", "reasoning"] + ["trace"] * is_trace,
                                   value=workload if isinstance(workload, str) else workload.kind,
                                   description="workload", disabled=self.spec is not None)
        self.rates = W.Text(value=", ".join(f"{r:g}" for r in rates), description="rates (req/s)",
                            placeholder="empty: the trace's own times" if is_trace else "")
        if num_requests is None:  # a whole trace, else 40
            num_requests = len(self.spec.entries) if isinstance(self.spec, TraceSpec) else 40
        self.num_requests = W.BoundedIntText(value=min(num_requests, 100_000), min=1, max=100_000,
                                             description="requests")
        self.policies = W.SelectMultiple(options=list(shipped_configs()), value=tuple(policies), rows=5,
                                         description="policies")
        self.mode = W.ToggleButtons(options=["live", "sim"], value="sim" if sim else "live")
        self.run_button = W.Button(description="Run", icon="play", button_style="primary")
        self.run_button.on_click(lambda _: self.start())
        self.progress = W.IntProgress(value=0, min=0, max=1, description="requests")
        self.figures = {
            "ttft": figure_widget(figures.latency_vs_rate([], "ttft")),
            "goodput": figure_widget(figures.goodput_vs_rate([])),
            "throughput": figure_widget(figures.throughput_vs_rate([])),
            "pareto": figure_widget(figures.pareto([])),
        }
        self._task: asyncio.Task | None = None
        self.widget = W.VBox([W.HBox([W.VBox([self.workload, self.rates, self.num_requests]), self.policies,
                                      W.VBox([self.mode, self.run_button, self.progress])]),
                              self.status.widget, W.HBox([self.figures["ttft"], self.figures["goodput"]]),
                              W.HBox([self.figures["throughput"], self.figures["pareto"]])])

    # --- inputs -----------------------------------------------------------------------------------------------------
    @property
    def router_url(self) -> str | None:
        return getattr(self.stack, "router_url", None) or self._router_url

    @property
    def engine_urls(self) -> list[str]:
        if self.stack is not None:
            return list(getattr(self.stack, "engine_urls", None) or getattr(self.stack, "engine_base_urls", []))
        return self._engine_urls

    def parse_rates(self, text: str | None = None) -> list[float]:
        """The rates box as numbers; empty means the trace's own times when replaying a trace."""
        if isinstance(self.spec, TraceSpec) and not (text if text is not None else self.rates.value).strip():
            return []
        try:
            rates = [float(x) for x in (text if text is not None else self.rates.value).replace(";", ",").split(",")
                     if x.strip()]
        except ValueError:
            raise ConfigError(f"rates must be numbers separated by commas, got {self.rates.value!r}", "rates") from None
        if not rates or any(r <= 0 for r in rates):
            raise ConfigError("give at least one rate, each > 0", "rates")
        return rates

    def points(self) -> list[RunPoint]:
        """Every run of every report so far, labelled per report when a policy ran more than once."""
        return [p for report in self.reports for p in run_points(report)]

    # --- running ------------------------------------------------------------------------------------------------------
    def start(self) -> asyncio.Task:
        """``run()`` as a task of the kernel's event loop (what the Run button does)."""
        if self._task is not None and not self._task.done():
            raise LlmdError("a benchmark is already running")
        self._task = kernel_loop().create_task(self.run())
        return self._task

    async def run(self, policies: Sequence[str] | None = None, rates: Sequence[float] | None = None,
                  num_requests: int | None = None, sim: bool | None = None,
                  label: str | None = None) -> dict[str, Any] | None:
        """Run every policy at every rate; the bench JSON document, or None (and one error line) on failure.
        ``label`` names the runs of a single policy (e.g. ``"after tuning"``) instead of the policy's name."""
        self.run_button.disabled = True
        try:
            report = await self._run(list(policies or self.policies.value),
                                     list(rates) if rates is not None else self.parse_rates(),
                                     num_requests or int(self.num_requests.value),
                                     self.mode.value == "sim" if sim is None else sim, label)
        except Exception as exc:  # noqa: BLE001 - one line in the panel
            self.status.error(exc)
            return None
        finally:
            self.run_button.disabled = False
        self.reports.append(report)
        self.redraw()
        n = len(report["runs"])
        fit = report["workload"].get("trace_fit")
        clipped = f"; {fit['clipped']} of {fit['requests']} trace requests clipped to the context" if fit else ""
        self.status.ok(f"{n} runs done ({report['workload']['mode']}); {len(self.reports)} reports side by side"
                       + clipped)
        return report

    async def _run(self, policies: list[str], rates: list[float], n: int, sim: bool,
                   label: str | None) -> dict[str, Any]:
        if not policies:
            raise ConfigError("choose at least one policy", "policies")
        if label is not None and len(policies) > 1:
            raise ConfigError("a label names the runs of one policy", "label")
        spec = self.spec or make_spec(self.workload.value)
        arrivals = [ArrivalSpec(pattern="poisson", rate=r) for r in rates] or [ArrivalSpec(pattern="trace")]
        if arrivals[0].pattern == "trace" and not isinstance(spec, TraceSpec):
            raise ConfigError("give at least one rate (only a trace replays at its own times)", "rates")
        per_run = n
        if isinstance(spec, TraceSpec):
            spec = await asyncio.to_thread(self._fit, spec, sim)
            fit = fit_summary(spec, n)
            per_run = fit.requests - fit.dropped
        suffix = f" #{len(self.reports) + 1}" if any(
            r.get("policy", "").split(" #")[0] in policies for rep in self.reports for r in rep["runs"]) else ""
        self.progress.max, self.progress.value = len(policies) * len(arrivals) * per_run, 0
        runs: list[dict[str, Any]] = []
        for policy in policies:
            name = label or policy + suffix
            if sim:
                runs += await self._sim(spec, arrivals, n, policy, name)
                continue
            self._prepare_live(policy, len(policies) > 1)  # in this thread: a restarted router dies with the kernel
            for i, arrival in enumerate(arrivals):
                self.progress.description = f"{policy} {arrival.label}"
                runs.append(await self._live_one(spec, arrival, n, i, name))
        mode = {"mode": "sim", "engines": self.sim_engines} if sim else {"mode": "live", "target": self.router_url}
        info = workload_info(spec, arrivals, num_requests=n, seed=self.seed,
                             slo={"ttft": self.slo.ttft, "tpot": self.slo.tpot}, **mode)
        return build_report(info, runs)

    async def _sim(self, spec: WorkloadSpec, arrivals: list[ArrivalSpec], n: int, policy: str,
                   label: str) -> list[dict[str, Any]]:
        from llmd_kserve.bench.sim_configs import sim_config
        from llmd_kserve.cluster_sim import SimOptions, run_bench

        opts = SimOptions(engines=self.sim_engines, num_blocks=self.sim_num_blocks, seed=self.seed)
        out = []
        for arrival in arrivals:  # one at a time so the progress bar moves
            self.progress.description = f"{policy} {arrival.label} (sim)"
            base = self.progress.value

            def moved(_: str, done: int, total: int, base: int = base) -> None:
                self.progress.value = base + done

            out += await asyncio.to_thread(run_bench, workload=spec, arrivals=[arrival], num_requests=n,
                                           seed=self.seed, slo=self.slo, config=sim_config(policy), policy_label=label,
                                           options=opts, progress=moved)
            out[-1]["offered_rps"] = arrival.rate
            self.progress.value = base + out[-1]["summary"]["n"]
        return out

    def _fit(self, spec: TraceSpec, sim: bool) -> TraceSpec:
        """The trace fitted to the engines' context: the simulated engines', or the one the router reports."""
        if spec.max_model_len is not None:
            return spec
        if sim:
            return spec.model_copy(update={"max_model_len": sim_context_len()})
        if not self.router_url:
            raise LlmdError("no router: start the stack first (StackPanel) or pass router_url=")
        return spec.model_copy(update={"max_model_len": target_context(self.router_url, None)})

    def _prepare_live(self, policy: str, several: bool) -> None:
        if not self.router_url:
            raise LlmdError("no router: start the stack first (StackPanel) or pass router_url=")
        current = getattr(self.stack, "config_name", None) or getattr(getattr(self.stack, "settings", None), "config",
                                                                      policy)
        if several or (self.stack is not None and current != policy):
            restart = getattr(self.stack, "restart_router", None)
            if restart is None:
                raise LlmdError("comparing policies live needs a local stack (StackPanel or LocalStack), "
                                "or use sim mode")
            restart(policy)
        for url in self.engine_urls:  # every policy starts from cold caches
            req = urllib.request.Request(url.split("#")[0] + "/reset_prefix_cache", method="POST")
            with urllib.request.urlopen(req, timeout=10) as resp:
                resp.read()

    async def _live_one(self, spec: WorkloadSpec, arrival: ArrivalSpec, n: int, i: int,
                        label: str) -> dict[str, Any]:
        from llmd_kserve.bench.loadgen import LoadConfig, run_load

        rng = random.Random(self.seed + i)
        reqs = assign_arrivals(build_requests(spec, rng, n), arrival, rng)
        config = LoadConfig(target=self.router_url or "", progress=False,
                            engine_urls=tuple(u.split("#")[0] for u in self.engine_urls))
        result = await run_load(reqs, arrival, config, run_tag=f"{label}-{i}-".replace(" ", ""),
                                on_result=lambda _: setattr(self.progress, "value", self.progress.value + 1))
        return dict(run_entry_from(result, label, self.slo), offered_rps=arrival.rate, scale="live")

    def redraw(self) -> None:
        pts = self.points()
        slo: Mapping[str, float | None] = {"ttft": self.slo.ttft, "tpot": self.slo.tpot}
        replace_figure(self.figures["ttft"], figures.latency_vs_rate(pts, "ttft"))
        replace_figure(self.figures["goodput"], figures.goodput_vs_rate(pts, slo))
        replace_figure(self.figures["throughput"], figures.throughput_vs_rate(pts))
        replace_figure(self.figures["pareto"], figures.pareto(pts))
