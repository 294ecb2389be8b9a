"""What every panel shares: a one-line status/error line, the kernel's event loop, figure widgets updated in place."""

from __future__ import annotations

import asyncio
import html
import logging
from typing import Any

import ipywidgets as W
import plotly.graph_objects as go

from llmd_kserve.bench.stats import SLO
from llmd_kserve.errors import LlmdError

log = logging.getLogger(__name__)

PANEL_SLO = SLO(ttft=0.5, tpot=0.05)
"""The panels' default objectives (the demo's): first token within 0.5 s, then at least 20 tokens/s."""


def one_line(exc: BaseException) -> str:
    """An exception as one readable line: our own errors by their message, others prefixed by their type."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, LlmdError) and text:
        return text
    name = type(exc).__name__
    return f"{name}: {text}" if text else name


class StatusLine:
    """One line under a panel: ``ok``/``info``/``error``; ``text`` is what it shows (for tests)."""

    _COLORS = {"ok": "#1a7f37", "info": "#444", "error": "#b42318"}

    def __init__(self) -> None:
        self.widget = W.HTML(value="")
        self.text = ""
        self.kind = "info"

    def show(self, text: str, kind: str = "info") -> None:
        self.text, self.kind = text, kind
        self.widget.value = f"<span style='color:{self._COLORS[kind]}'>{html.escape(text)}</span>"

    def ok(self, text: str) -> None:
        self.show(text, "ok")

    def error(self, exc: BaseException | str) -> None:
        text = exc if isinstance(exc, str) else one_line(exc)
        if not isinstance(exc, str):
            log.debug("panel error", exc_info=exc)
        self.show(text, "error")


def kernel_loop() -> asyncio.AbstractEventLoop:
    """The event loop of the running kernel (ipykernel runs one; cells run inside it)."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.get_event_loop_policy().get_event_loop()


def figure_widget(fig: go.Figure) -> go.FigureWidget:
    """A ``FigureWidget`` of a figure (plotly ≥ 6 needs ``anywidget`` for it: the ``notebook`` extra)."""
    return go.FigureWidget(fig)


def replace_figure(widget: go.FigureWidget, fig: go.Figure) -> None:
    """Redraw ``widget`` as ``fig`` inside one ``batch_update()``: traces updated in place when their number and
    types match (no flicker), else replaced; the layout's title and annotations follow."""
    with widget.batch_update():
        same = len(widget.data) == len(fig.data) and all(
            a.type == b.type for a, b in zip(widget.data, fig.data, strict=True))
        if same:
            for old, new in zip(widget.data, fig.data, strict=True):
                old.update(new.to_plotly_json(), overwrite=True)
        else:
            widget.data = ()
            widget.add_traces(list(fig.data))
        widget.layout.title = fig.layout.title
        widget.layout.annotations = fig.layout.annotations


class Panel:
    """Base of the panels: ``widget`` is what the notebook displays (``panel`` alone in a cell shows it)."""

    widget: W.Widget

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)
