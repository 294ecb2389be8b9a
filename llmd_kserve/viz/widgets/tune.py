"""``TunePanel``: sliders for a scheduler config (scorer weights, the prefix-affinity threshold, decider thresholds,
replica counts, the P:D split); each change re-runs the virtual-time cluster simulator and redraws TTFT and
goodput against the starting config; *Apply* pushes the config to a running router, *Export* writes the YAML and a
ConfigMap manifest. With llm-d's ``prefix-cache-affinity-filter`` it also shows the filter's threshold and
``peakPrefillThroughput``, and *Calibrate* measures that throughput (a router or engine URL, or ``sim:PROFILE``).

    tune = TunePanel("default", router_url=stack.router_url)
    tune                                   # move sliders; or: tune.set_weight("default/queue-scorer", 3)
    tune.apply(); tune.export("tuned/")    # status line says what happened, in one line
    TunePanel("llm-d-optimized-baseline").calibrate("sim:h100-llama8b")
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ipywidgets as W

from llmd_kserve.bench.stats import SLO
from llmd_kserve.bench.workloads import SharedPrefixSpec, WorkloadSpec, sweep
from llmd_kserve.builtin import REGISTRY
from llmd_kserve.config.loader import load_config, parse_config
from llmd_kserve.config.schema import SchedulerConfig
from llmd_kserve.defaults import DEFAULT_PROFILE
from llmd_kserve.errors import LlmdError
from llmd_kserve.scheduling.cache_affinity_filter import DEFAULT_PEAK_PREFILL_THROUGHPUT
from llmd_kserve.viz import figures
from llmd_kserve.viz.admin import config_document, export_config, push_config
from llmd_kserve.viz.data import RunPoint, run_points
from llmd_kserve.viz.widgets._common import PANEL_SLO, Panel, StatusLine, figure_widget, replace_figure

TUNE_WORKLOAD = SharedPrefixSpec(num_groups=32, prompts_per_group=16, system_prompt_len=3000, question_len=128,
                                 output_len=32)
"""The simulator's default workload: 512 requests over 32 shared 3,000-token prefixes, more than one engine's
4,096 blocks hold (about a second per run on 2 cores)."""


class TunePanel(Panel):
    """What-if tuning of a scheduler config in the cluster simulator, then apply/export."""

    def __init__(self, config: str | Path | SchedulerConfig = "default", *, router_url: str | None = None,
                 api_key: str | None = None, workload: WorkloadSpec = TUNE_WORKLOAD, rate: float = 40.0,
                 engines: int = 4, prefill: int = 0, decode: int = 0, num_blocks: int | None = 4096,
                 slo: SLO = PANEL_SLO, seed: int = 0, auto: bool = True) -> None:
        self.base = config if isinstance(config, SchedulerConfig) else load_config(config)
        self.router_url, self.api_key = router_url, api_key
        self.workload, self.slo, self.seed, self.num_blocks = workload, slo, seed, num_blocks
        self.pd = any(p.type == "pd-profile-handler" for p in self.base.plugins)
        if self.pd and not (prefill and decode):
            prefill, decode = 1, max(1, engines - 1)
        self.status = StatusLine()
        self.weights: dict[tuple[int, int], W.FloatSlider] = {}
        self.params: dict[tuple[int, tuple[str, ...]], W.Widget] = {}
        self._build_sliders()
        self.rate = W.FloatSlider(value=rate, min=1, max=200, step=1, description="rate (req/s)",
                                  continuous_update=False, style=_STYLE)
        self.engines = W.IntSlider(value=engines, min=1, max=16, description="engines", continuous_update=False,
                                   style=_STYLE)
        self.prefill = W.IntSlider(value=prefill, min=1, max=8, description="prefill replicas",
                                   continuous_update=False, style=_STYLE)
        self.decode = W.IntSlider(value=decode, min=1, max=8, description="decode replicas", continuous_update=False,
                                  style=_STYLE)
        replicas = [self.prefill, self.decode] if self.pd else [self.engines]
        self.apply_button = W.Button(description="Apply to router", icon="upload", disabled=not router_url)
        self.export_dir = W.Text(value="tuned-config", description="export to", style=_STYLE)
        self.export_button = W.Button(description="Export YAML", icon="download")
        self.apply_button.on_click(lambda _: self.apply())
        self.export_button.on_click(lambda _: self.export())
        self.calibrate_from = W.Text(value=router_url or f"sim:{DEFAULT_PROFILE}", description="calibrate from",
                                     style=_STYLE)
        self.calibrate_button = W.Button(description="Calibrate", icon="tachometer")
        self.calibrate_button.on_click(lambda _: self.calibrate())
        calibration = [self.calibrate_from, self.calibrate_button] if self._peaks() else []
        self.baseline: RunPoint | None = None
        self.tuned: RunPoint | None = None
        self.runs = 0
        self.ttft_figure = figure_widget(figures.latency_vs_rate([], "ttft"))
        self.goodput_figure = figure_widget(figures.goodput_vs_rate([]))
        controls = [*self.weights.values(), *self.params.values(), *replicas, self.rate]
        for w in controls:
            w.observe(self._changed, names="value")
        self.auto = auto
        self.widget = W.VBox([W.HBox([W.VBox(controls), W.VBox([self.apply_button, self.export_dir,
                                                                 self.export_button, *calibration])]),
                              self.status.widget, W.HBox([self.ttft_figure, self.goodput_figure])])
        if auto:
            self.simulate()

    # --- the config the sliders describe ----------------------------------------------------------------------------
    def _build_sliders(self) -> None:
        kinds = {p.ref: REGISTRY[p.type].kind for p in self.base.plugins if p.type in REGISTRY}
        for i, prof in enumerate(self.base.scheduling_profiles):
            for j, ref in enumerate(prof.plugins):
                if kinds.get(ref.plugin_ref) == "scorer":
                    self.weights[(i, j)] = W.FloatSlider(
                        value=1.0 if ref.weight is None else ref.weight, min=0.0, max=5.0, step=0.25,
                        description=f"{prof.name}/{ref.plugin_ref}", continuous_update=False, style=_STYLE,
                        layout=W.Layout(width="480px"))
        for k, plugin in enumerate(self.base.plugins):
            params = plugin.parameters or {}
            if plugin.type == "prefix-affinity-filter":
                v = float(params.get("threshold", 0.5))
                self.params[(k, ("threshold",))] = W.FloatSlider(
                    value=v, min=0.0, max=1.0, step=0.05, description=f"{plugin.ref}.threshold",
                    continuous_update=False, style=_STYLE, layout=W.Layout(width="480px"))
            if plugin.type == "prefix-cache-affinity-filter":
                self.params[(k, ("affinityThreshold",))] = W.FloatSlider(
                    value=float(params.get("affinityThreshold", 0.8)), min=0.0, max=1.0, step=0.05,
                    description=f"{plugin.ref}.affinityThreshold", continuous_update=False, style=_STYLE,
                    layout=W.Layout(width="480px"))
                self.params[(k, ("peakPrefillThroughput",))] = W.BoundedFloatText(
                    value=float(params.get("peakPrefillThroughput", DEFAULT_PEAK_PREFILL_THROUGHPUT)), min=1.0,
                    max=1e8, step=100.0, description=f"{plugin.ref}.peakPrefillThroughput", style=_STYLE,
                    layout=W.Layout(width="480px"))
            for name, v in (params.get("deciderParameters") or {}).items():
                if isinstance(v, bool) or not isinstance(v, (int, float)):
                    continue
                path = ("deciderParameters", name)
                desc = f"decider.{name}"
                if isinstance(v, int):
                    self.params[(k, path)] = W.IntSlider(value=v, min=0, max=max(8, 4 * v), step=max(1, v // 16),
                                                         description=desc, continuous_update=False, style=_STYLE,
                                                         layout=W.Layout(width="480px"))
                else:
                    self.params[(k, path)] = W.FloatSlider(value=v, min=0.0, max=max(1.0, 4 * v), step=max(v, 0.01) / 20,
                                                           readout_format=".3f", description=desc,
                                                           continuous_update=False, style=_STYLE,
                                                           layout=W.Layout(width="480px"))

    def set_weight(self, key: str, weight: float) -> None:
        """Move the slider of scorer ``"<profile>/<plugin>"`` (as in ``/debug/decisions``)."""
        for (i, j), slider in self.weights.items():
            prof = self.base.scheduling_profiles[i]
            if f"{prof.name}/{prof.plugins[j].plugin_ref}" == key:
                slider.value = weight
                return
        raise LlmdError(f"no scorer {key!r}; tunable: {sorted(s.description for s in self.weights.values())}")

    def config(self) -> SchedulerConfig:
        """The config the sliders describe, validated (ConfigError naming the field otherwise)."""
        doc = config_document(self.base)
        for (i, j), slider in self.weights.items():
            doc["schedulingProfiles"][i]["plugins"][j]["weight"] = float(slider.value)
        for (k, path), widget in self.params.items():
            target = doc["plugins"][k].setdefault("parameters", {})
            for part in path[:-1]:
                target = target.setdefault(part, {})
            target[path[-1]] = widget.value
        return parse_config(doc, "TunePanel")

    def roles(self) -> tuple[str, ...] | None:
        if not self.pd:
            return None
        return ("prefill",) * int(self.prefill.value) + ("decode",) * int(self.decode.value)

    # --- simulate ---------------------------------------------------------------------------------------------------
    def _run(self, config: SchedulerConfig, label: str) -> RunPoint:
        from llmd_kserve.cluster_sim import SimOptions, run_bench

        roles = self.roles()
        opts = SimOptions(engines=int(self.engines.value), roles=roles, num_blocks=self.num_blocks,  # type: ignore[arg-type]
                          seed=self.seed)
        arrivals = sweep([float(self.rate.value)])
        runs = run_bench(workload=self.workload, arrivals=arrivals, seed=self.seed, slo=self.slo, config=config,
                         policy_label=label, options=opts)
        return run_points({"runs": [dict(runs[0], offered_rps=float(self.rate.value))]})[0]

    def simulate(self) -> tuple[RunPoint, RunPoint] | None:
        """Simulate the starting config (once per cluster shape and rate) and the tuned one; redraw both."""
        try:
            tuned_config = self.config()
            shape = (self.roles(), int(self.engines.value), float(self.rate.value))
            if self.baseline is None or getattr(self, "_shape", None) != shape:
                self.baseline = self._run(self.base, "start")
                self._shape = shape
            self.tuned = self._run(tuned_config, "tuned")
        except Exception as exc:  # noqa: BLE001 - a bad slider combination is one line
            self.status.error(exc)
            return None
        self.runs += 1
        pts = [self.baseline, self.tuned]
        replace_figure(self.ttft_figure, figures.latency_vs_rate(pts, "ttft"))
        replace_figure(self.goodput_figure, figures.goodput_vs_rate(pts))
        b, t = self.baseline, self.tuned
        self.status.ok(f"simulated {t.n} requests at {self.rate.value:g} req/s: TTFT p90 "
                       f"{_ms(b.ttft.p90)} → {_ms(t.ttft.p90)} ms, goodput {_f(b.goodput_rps)} → {_f(t.goodput_rps)}/s")
        return b, t

    def _changed(self, change: dict[str, Any]) -> None:
        if self.auto:
            self.simulate()

    # --- calibrate ----------------------------------------------------------------------------------------------------
    def _peaks(self) -> list[W.Widget]:
        return [w for (_, path), w in self.params.items() if path == ("peakPrefillThroughput",)]

    def calibrate(self, source: str | None = None, *, warmup: int = 2, measurements: int = 5,
                  **options: Any) -> int | None:
        """Measure peak prefill throughput (``llmd-kserve calibrate``) of ``source`` (default: the *calibrate from*
        field): a router or engine URL, or ``sim:PROFILE`` (a simulated engine of that latency profile); set it on
        every ``prefix-cache-affinity-filter``. The measured tokens/s, or None (the status line says why)."""
        from llmd_kserve.bench.peak_prefill import CalibrationOptions, calibrate, calibrate_sim

        source = (source or self.calibrate_from.value).strip()
        try:
            if not self._peaks():
                raise LlmdError("this config has no prefix-cache-affinity-filter to calibrate")
            if source.startswith("sim:"):
                result = calibrate_sim(source[4:], warmup=warmup, measurements=measurements, fit=False, **options)
            else:
                result = calibrate(CalibrationOptions(source, warmup=warmup, measurements=measurements, fit=False,
                                                      api_key=self.api_key, **options))
        except Exception as exc:  # noqa: BLE001 - one line in the status
            self.status.error(exc)
            return None
        for widget in self._peaks():
            widget.value = float(result.peak_prefill_throughput)
        self.status.ok(f"calibrated {result.target}: peakPrefillThroughput {result.peak_prefill_throughput} tokens/s "
                       f"(median TTFT {result.median_ttft_s * 1000:.0f} ms over {result.chunk} tokens)")
        return result.peak_prefill_throughput

    # --- apply / export -----------------------------------------------------------------------------------------------
    def apply(self) -> dict[str, Any] | None:
        """Push the tuned config to ``router_url`` (``POST /admin/config``); the router's answer, or None."""
        if not self.router_url:
            self.status.error("no router to apply to: TunePanel(router_url=...)")
            return None
        try:
            answer = push_config(self.router_url, self.config(), self.api_key)
        except Exception as exc:  # noqa: BLE001
            self.status.error(exc)
            return None
        self.status.ok(f"applied to {self.router_url}: {answer.get('status', 'ok')}")
        return answer

    def export(self, directory: str | Path | None = None, name: str = "llmd-router-config",
               namespace: str = "llmd") -> tuple[Path, Path] | None:
        """Write ``scheduler-config.yaml`` and ``configmap.yaml``; their paths, or None."""
        try:
            paths = export_config(self.config(), directory or self.export_dir.value, name, namespace)
        except Exception as exc:  # noqa: BLE001
            self.status.error(exc)
            return None
        self.status.ok(f"wrote {paths[0]} and {paths[1]}")
        return paths


_STYLE = {"description_width": "220px"}


def _ms(v: float | None) -> str:
    return "–" if v is None else f"{v * 1000:.0f}"


def _f(v: float | None) -> str:
    return "–" if v is None else f"{v:.1f}"


def tunable(panel: TunePanel) -> Sequence[str]:
    """Descriptions of every slider (for docs and tests)."""
    return [w.description for w in (*panel.weights.values(), *panel.params.values())]
