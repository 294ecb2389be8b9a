"""Plotly figures from the records of :mod:`llmd_kserve.viz.data`: pure functions, one figure each, no I/O.

Benchmark figures (from ``RunPoint``s: one run, a sweep, several policies; a sweep draws lines over the offered
rate, runs that all share one rate draw grouped bars per policy instead)::

    latency_vs_rate(points, metric="ttft")     p50/p90/p99 of ``ttft`` | ``tpot`` | ``e2e``
    throughput_vs_rate(points)                 successful requests/s (offered rate dotted)
    goodput_vs_rate(points, slo=None)          requests/s within the SLO, the SLO in the title
    pareto(points)                             throughput vs TTFT p90, the Pareto front joined
    hit_rate_by_run(points)                    prefix-cache hit rate of each run
    latency_cdf(values_by_run, name="TTFT")    empirical CDFs
    endpoint_load(load_by_endpoint, title)     in-flight requests per endpoint over time (step lines)

Live figures (from ``LiveSample``s, oldest first)::

    hit_rate_over_time(samples)                engines' truth next to the router's prediction (and reported)
    endpoint_heatmap(samples)                  queue length and KV-cache use per endpoint over time
    live_latency(samples)                      TTFT / TPOT p50 and p90 over time

    decision_explained(decision)               each scorer's weighted score per candidate, stacked; winner marked

Every figure has a title and axis titles in units; times are seconds, rates are per second. Text that comes from
a router or a run (request ids, endpoint, plugin and profile names) is escaped: plotly renders a few HTML tags
(links, styles) in titles, labels and legends.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from llmd_kserve.viz.data import DecisionExplained, LiveSample, RunPoint, by_policy, pareto_front

QUANTILES = ("p50", "p90", "p99")
_DASH = {"p50": "solid", "p90": "dash", "p99": "dot"}
_NAMES = {"ttft": "TTFT", "tpot": "TPOT", "e2e": "E2E latency"}
_LAYOUT = {"template": "plotly_white", "height": 380, "margin": {"l": 60, "r": 20, "t": 60, "b": 50},
           "legend": {"orientation": "h", "y": -0.2}}


def label(text: object) -> str:
    """``text`` safe to show in a plotly title, tick label or legend: ``&`` and ``<`` escaped (plotly shows the
    entities as the characters, and no tag can start)."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;")


def _fig(title: str, x: str, y: str) -> go.Figure:
    fig = go.Figure()
    fig.update_layout(title=title, xaxis_title=x, yaxis_title=y, **_LAYOUT)
    return fig


def _one_rate(points: Sequence[RunPoint]) -> bool:
    """True when no policy has runs at two offered rates (then bars per policy say more than lines)."""
    return all(len({p.rate for p in runs}) <= 1 for runs in by_policy(points).values())


def _ms(v: float | None) -> float | None:
    return None if v is None else v * 1000.0


def latency_vs_rate(points: Sequence[RunPoint], metric: str = "ttft") -> go.Figure:
    """``metric`` (``ttft``, ``tpot`` or ``e2e``) p50/p90/p99 in ms against the offered rate, one colour per policy."""
    if metric not in _NAMES:
        raise ValueError(f"metric must be one of {sorted(_NAMES)}, got {metric!r}")
    name = _NAMES[metric]
    if _one_rate(points):
        fig = _fig(f"{name} by policy", "policy", f"{name} (ms)")
        for q in QUANTILES:
            fig.add_trace(go.Bar(x=[p.label for p in points], y=[_ms(getattr(p, metric).get(q)) for p in points],
                                 name=q))
        fig.update_layout(barmode="group")
        return fig
    fig = _fig(f"{name} vs offered load", "offered rate (req/s)", f"{name} (ms)")
    for i, (label, runs) in enumerate(by_policy(points).items()):
        color = _color(i)
        for q in QUANTILES:
            fig.add_trace(go.Scatter(x=[p.rate for p in runs], y=[_ms(getattr(p, metric).get(q)) for p in runs],
                                     mode="lines+markers", name=f"{label} {q}", legendgroup=label,
                                     line={"color": color, "dash": _DASH[q]}))
    return fig


def throughput_vs_rate(points: Sequence[RunPoint]) -> go.Figure:
    """Completed requests per second against the offered rate; the offered rate itself dotted."""
    if _one_rate(points):
        fig = _fig("Throughput by policy", "policy", "completed requests/s")
        fig.add_trace(go.Bar(x=[p.label for p in points], y=[p.throughput_rps for p in points], name="throughput"))
        return fig
    fig = _fig("Throughput vs offered load", "offered rate (req/s)", "completed requests/s")
    rates = sorted({p.rate for p in points if p.rate is not None})
    if rates:
        fig.add_trace(go.Scatter(x=rates, y=rates, mode="lines", name="offered", line={"color": "grey", "dash": "dot"}))
    for i, (label, runs) in enumerate(by_policy(points).items()):
        fig.add_trace(go.Scatter(x=[p.rate for p in runs], y=[p.throughput_rps for p in runs], mode="lines+markers",
                                 name=label, line={"color": _color(i)}))
    return fig


def _slo_text(points: Sequence[RunPoint], slo: Mapping[str, float | None] | None) -> str:
    ttft = (slo or {}).get("ttft", next((p.slo_ttft for p in points if p.slo_ttft is not None), None))
    tpot = (slo or {}).get("tpot", next((p.slo_tpot for p in points if p.slo_tpot is not None), None))
    parts = ([f"TTFT ≤ {ttft * 1000:g} ms"] if ttft else []) + ([f"TPOT ≤ {tpot * 1000:g} ms"] if tpot else [])
    return "SLO: " + " and ".join(parts) if parts else "no SLO set: every completed request counts"


def goodput_vs_rate(points: Sequence[RunPoint], slo: Mapping[str, float | None] | None = None) -> go.Figure:
    """Requests per second that met the SLO (named in the title) against the offered rate."""
    text = _slo_text(points, slo)
    if _one_rate(points):
        fig = _fig(f"Goodput by policy ({text})", "policy", "requests/s within SLO")
        fig.add_trace(go.Bar(x=[p.label for p in points], y=[p.goodput_rps for p in points], name="goodput"))
        fig.add_trace(go.Bar(x=[p.label for p in points], y=[p.throughput_rps for p in points], name="throughput",
                             opacity=0.35))
        fig.update_layout(barmode="overlay")
        return fig
    fig = _fig(f"Goodput vs offered load ({text})", "offered rate (req/s)", "requests/s within SLO")
    rates = sorted({p.rate for p in points if p.rate is not None})
    if rates:
        fig.add_trace(go.Scatter(x=rates, y=rates, mode="lines", name="offered (all within SLO)",
                                 line={"color": "grey", "dash": "dot"}))
    for i, (label, runs) in enumerate(by_policy(points).items()):
        fig.add_trace(go.Scatter(x=[p.rate for p in runs], y=[p.goodput_rps for p in runs], mode="lines+markers",
                                 name=label, line={"color": _color(i)}))
    return fig


def pareto(points: Sequence[RunPoint]) -> go.Figure:
    """Each run as (throughput, TTFT p90); the runs no other run beats on both are joined as the front."""
    fig = _fig("Throughput–latency trade-off", "completed requests/s", "TTFT p90 (ms)")
    for i, (label, runs) in enumerate(by_policy(points).items()):
        fig.add_trace(go.Scatter(x=[p.throughput_rps for p in runs], y=[_ms(p.ttft.p90) for p in runs],
                                 mode="markers", name=label, marker={"size": 10, "color": _color(i)},
                                 text=[f"{p.rate:g} req/s offered" if p.rate else "" for p in runs]))
    front = pareto_front(points)
    if front:
        fig.add_trace(go.Scatter(x=[p.throughput_rps for p in front], y=[_ms(p.ttft.p90) for p in front],
                                 mode="lines", name="Pareto front", line={"color": "black", "dash": "dash"}))
    return fig


def hit_rate_by_run(points: Sequence[RunPoint]) -> go.Figure:
    """Prefix-cache hit rate (cached / prompt tokens) of each run."""
    fig = _fig("Prefix-cache hit rate", "run", "cached / prompt tokens")
    fig.add_trace(go.Bar(x=[p.label + (f" @{p.rate:g}/s" if p.rate is not None else "") for p in points],
                         y=[p.hit_rate or 0.0 for p in points], name="hit rate"))
    fig.update_yaxes(range=[0, 1], tickformat=".0%")
    return fig


def latency_cdf(values_by_run: Mapping[str, Sequence[float]], name: str = "TTFT") -> go.Figure:
    """Empirical CDF of one latency (seconds) per run."""
    fig = _fig(f"{name} CDF", f"{name} (s)", "fraction of requests")
    for label, values in values_by_run.items():
        xs = sorted(values)
        fig.add_trace(go.Scatter(x=xs, y=[(i + 1) / len(xs) for i in range(len(xs))], mode="lines", name=label))
    return fig


def endpoint_load(load_by_endpoint: Mapping[str, tuple[Sequence[float], Sequence[int]]], title: str) -> go.Figure:
    """In-flight requests per endpoint over time (step series, e.g. ``bench.report.endpoint_load``)."""
    fig = _fig(f"In-flight requests per endpoint — {label(title)}", "time (s)", "in flight")
    for ep, (ts, ys) in load_by_endpoint.items():
        fig.add_trace(go.Scatter(x=list(ts), y=list(ys), mode="lines", line_shape="hv", name=label(ep)))
    return fig


def hit_rate_over_time(samples: Sequence[LiveSample]) -> go.Figure:
    """Prefix-cache hit rate per refresh window: the engines' counters next to what the router predicted."""
    fig = _fig("Prefix-cache hit rate: engines vs router prediction", "time (s)", "cached / prompt tokens")
    t0 = samples[0].time if samples else 0.0
    xs = [s.time - t0 for s in samples]
    for attr, name, dash in (("hit_rate_engines", "engines (truth)", "solid"),
                             ("hit_rate_predicted", "router predicted", "dash"),
                             ("hit_rate_reported", "reported in responses", "dot")):
        fig.add_trace(go.Scatter(x=xs, y=[getattr(s, attr) for s in samples], mode="lines+markers", name=name,
                                 line={"dash": dash}, connectgaps=False))
    fig.update_yaxes(range=[0, 1.02], tickformat=".0%")
    return fig


def live_latency(samples: Sequence[LiveSample]) -> go.Figure:
    """TTFT and TPOT p50/p90 per refresh window, in ms."""
    fig = _fig("Latency per refresh window", "time (s)", "ms")
    t0 = samples[0].time if samples else 0.0
    xs = [s.time - t0 for s in samples]
    for metric in ("ttft", "tpot"):
        for q in ("p50", "p90"):
            fig.add_trace(go.Scatter(x=xs, y=[_ms(getattr(s, metric).get(q)) for s in samples], mode="lines",
                                     name=f"{_NAMES[metric]} {q}", line={"dash": _DASH[q]}))
    return fig


def endpoint_heatmap(samples: Sequence[LiveSample]) -> go.Figure:
    """Two heat-maps over time: queued requests per endpoint (top) and KV-cache use per endpoint (bottom)."""
    eps = sorted({e.endpoint for s in samples for e in s.endpoints})
    t0 = samples[0].time if samples else 0.0
    xs = [round(s.time - t0, 2) for s in samples]
    grid: dict[str, list[list[float | None]]] = {f: [[None] * len(samples) for _ in eps]
                                                 for f in ("waiting", "kv_usage")}
    for j, s in enumerate(samples):
        for e in s.endpoints:
            i = eps.index(e.endpoint)
            grid["waiting"][i][j] = e.waiting
            grid["kv_usage"][i][j] = e.kv_usage
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.12,
                        subplot_titles=("queued requests", "KV-cache use"))
    top = max([1.0, *(v for row in grid["waiting"] for v in row if v is not None)])
    names = [label(e) for e in eps]
    fig.add_trace(go.Heatmap(x=xs, y=names, z=grid["waiting"], colorscale="Oranges", zmin=0, zmax=top, name="queued",
                             colorbar={"y": 0.8, "len": 0.45, "title": "queued"}), row=1, col=1)
    fig.add_trace(go.Heatmap(x=xs, y=names, z=grid["kv_usage"], colorscale="Blues", zmin=0, zmax=1, name="KV use",
                             colorbar={"y": 0.2, "len": 0.45, "title": "KV", "tickformat": ".0%"}), row=2, col=1)
    fig.update_layout(title="Per-endpoint queue and KV-cache use", **{**_LAYOUT, "height": 460})
    fig.update_xaxes(title_text="time (s)", row=2, col=1)
    return fig


def decision_explained(decision: DecisionExplained) -> go.Figure:
    """One routing decision: a stacked bar per candidate endpoint, one segment per scorer (weight × score); the
    logged total on top of each bar and the winner marked."""
    title = (f"Why {label(decision.target)} (request {label(decision.request_id)}, profile "
             f"{label(decision.profile)})" if decision.target else "No routing decision yet")
    fig = _fig(title, "candidate endpoint", "weighted score")
    eps = list(decision.candidates)
    xs = [label(e) for e in eps]
    plugins = list(dict.fromkeys(c.plugin for c in decision.contributions))
    for plugin in plugins:
        by_ep = {c.endpoint: c for c in decision.contributions if c.plugin == plugin}
        fig.add_trace(go.Bar(x=xs, y=[by_ep[e].weighted if e in by_ep else 0.0 for e in eps],
                             name=f"{label(plugin)} (×{next(iter(by_ep.values())).weight:g})" if by_ep else label(plugin),
                             customdata=[by_ep[e].raw if e in by_ep else None for e in eps],
                             hovertemplate="%{x}<br>raw %{customdata:.3f} → weighted %{y:.3f}"))
    fig.add_trace(go.Scatter(x=xs, y=[decision.logged_totals.get(e, 0.0) for e in eps], mode="markers+text",
                             name="total (router log)", text=[f"{decision.logged_totals.get(e, 0.0):.2f}" for e in eps],
                             textposition="top center", marker={"symbol": "diamond", "color": "black", "size": 9}))
    if decision.target in eps:
        fig.add_annotation(x=label(decision.target), y=decision.logged_totals.get(decision.target, 0.0), text="▼ winner",
                           showarrow=False, yshift=38, font={"color": "crimson", "size": 14})
    fig.update_layout(barmode="stack")
    return fig


def _color(i: int) -> str:
    palette = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")
    return palette[i % len(palette)]
