"""Notebook visualisation: pure records (``data``), their sources (``sources``), plotly figures (``figures``),
ipywidgets panels (``widgets``) and the router admin client (``admin``).

    from llmd_kserve.viz import figures, load_bench
    figures.goodput_vs_rate(load_bench("sweep.json"))

Importing this package needs only plotly; the panels need the ``notebook`` extra (ipywidgets, anywidget).
"""

from llmd_kserve.viz import data, figures
from llmd_kserve.viz.data import DecisionExplained, EndpointSample, LiveSample, Quantiles, RunPoint
from llmd_kserve.viz.sources import PrometheusSource, RouterSource, SourceError, load_bench

__all__ = ["DecisionExplained", "EndpointSample", "LiveSample", "PrometheusSource", "Quantiles", "RouterSource",
           "RunPoint", "SourceError", "data", "figures", "load_bench"]
