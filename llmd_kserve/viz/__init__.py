"""Notebook visualisation: pure records, plotly figures, ipywidgets."""
