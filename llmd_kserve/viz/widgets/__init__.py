"""ipywidgets panels for notebooks (the ``notebook`` extra: ipywidgets, anywidget for plotly ``FigureWidget``s).

    StackPanel      start/stop the local stack or attach to a router; endpoints; KServe render/deploy/status/teardown
    LiveDashboard   live figures refreshed by an asyncio task of the kernel (start/stop/interval)
    BenchPanel      workload × rates × policies, live or simulated, progress bar, report figures side by side
    TunePanel       config sliders → cluster simulator → TTFT/goodput; Apply to the router, Export YAML + ConfigMap

Every panel shows errors as one line (``panel.status.text``), never a traceback.
"""

from llmd_kserve.viz.widgets.bench import BenchPanel
from llmd_kserve.viz.widgets.live import LiveDashboard
from llmd_kserve.viz.widgets.stack import StackPanel
from llmd_kserve.viz.widgets.tune import TunePanel

__all__ = ["BenchPanel", "LiveDashboard", "StackPanel", "TunePanel"]
