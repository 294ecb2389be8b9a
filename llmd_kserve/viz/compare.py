"""A figure that sets runs from different tools side by side (bench JSON runs, Benchmark Reports of any tool).

    side_by_side(points, title=None) -> Figure   TTFT, TPOT and E2E p50/p90/p99 (ms) per run, one panel each, and
                                                 each run's prefix-cache hit rate where it reported one

Runs from different tools need not share an offered rate, so this draws bars per run rather than lines over a
rate axis; each run is named by its label and, where known, its rate.
"""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from llmd_kserve.viz.data import RunPoint
from llmd_kserve.viz.figures import QUANTILES, label

_PANELS = (("ttft", "TTFT"), ("tpot", "TPOT"), ("e2e", "E2E latency"))
_COLORS = {"p50": "#1f77b4", "p90": "#ff7f0e", "p99": "#d62728"}


def _name(p: RunPoint) -> str:
    return label(p.label + (f" @{p.rate:.3g}/s" if p.rate is not None else ""))


def side_by_side(points: Sequence[RunPoint], title: str | None = None) -> go.Figure:
    """One panel per latency (p50/p90/p99 bars per run, ms) and one for the prefix-cache hit rate (%)."""
    fig = make_subplots(rows=1, cols=4, subplot_titles=[f"{n} (ms)" for _, n in _PANELS] + ["prefix-cache hit rate (%)"])
    names = [_name(p) for p in points]
    for col, (metric, _) in enumerate(_PANELS, start=1):
        for q in QUANTILES:
            ys = [getattr(p, metric).get(q) for p in points]
            fig.add_trace(go.Bar(x=names, y=[None if v is None else v * 1000 for v in ys], name=q,
                                 legendgroup=q, showlegend=col == 1, marker_color=_COLORS[q]), row=1, col=col)
    fig.add_trace(go.Bar(x=names, y=[None if p.hit_rate is None else p.hit_rate * 100 for p in points],
                         name="hit rate", marker_color="#2ca02c"), row=1, col=4)
    fig.update_layout(title=title or "Runs side by side", barmode="group", template="plotly_white", height=420,
                      margin={"l": 60, "r": 20, "t": 80, "b": 120}, legend={"orientation": "h", "y": -0.45})
    fig.update_yaxes(title_text="ms", row=1, col=1)
    fig.update_yaxes(title_text="%", range=[0, 100], row=1, col=4)
    return fig
