"""Real browser (headless system Chromium driven by Playwright): notebooks run in JupyterLab show their widgets
and plotly plots with data; the ``llmd-kserve dashboard`` page draws the live figures. Screenshots go to
``test-artifacts/``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from browser_lab import (
    PLOTS_WITH_DATA,
    ROOT,
    chromium_path,
    free_port,
    jupyterlab,
    open_notebook,
    run_all_cells,
    screenshot,
)

pytestmark = pytest.mark.slow
playwright_api = pytest.importorskip("playwright.sync_api", reason="pip install llmd-kserve[notebook] (playwright)")
QUICKSTART = ROOT / "notebooks" / "01_quickstart.ipynb"


@pytest.fixture(scope="module")
def browser():
    executable = chromium_path()
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=executable, headless=True,
                              args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"])
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser):
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = ctx.new_page()
    pg.set_default_timeout(60_000)
    try:
        yield pg
    finally:
        ctx.close()


def _plots_with_data(page) -> list[dict]:
    return [p for p in page.evaluate(PLOTS_WITH_DATA) if p["traces"] and p["points"]]


def _run_notebook(page, tmp_path: Path, src: Path, shot: str) -> None:
    root = tmp_path / "root"
    root.mkdir()
    shutil.copy(src, root / src.name)
    with jupyterlab(root, tmp_path / "jupyter-home") as lab:
        open_notebook(page, lab, src.name)
        errors = run_all_cells(page)
        try:
            assert not errors, f"cells raised:\n{errors[0]}"
            page.wait_for_selector(".jupyter-widgets", timeout=60_000)
            page.wait_for_function(
                f"() => ({PLOTS_WITH_DATA})().some(p => p.widget && p.traces > 0 && p.points > 0)",
                timeout=120_000, polling=500)
        finally:
            screenshot(page, shot)
        assert page.query_selector_all(".jupyter-widgets")
        assert any(p["widget"] for p in _plots_with_data(page))  # a FigureWidget drew data
        page.locator(".js-plotly-plot").first.scroll_into_view_if_needed()
        screenshot(page, shot + "-plot")


@pytest.mark.timeout(600)
@pytest.mark.skipif(not QUICKSTART.exists(), reason="notebooks/01_quickstart.ipynb is not in this checkout")
def test_quickstart_notebook_runs_in_jupyterlab(page, tmp_path: Path) -> None:
    _run_notebook(page, tmp_path, QUICKSTART, "jupyterlab-01_quickstart")


def _wait_http(url: str, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"dashboard exited with {proc.returncode}: {proc.stdout.read() if proc.stdout else ''}")
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"{url} did not answer within {timeout} s")


def _traffic(router: str, stop: threading.Event, limit: int = 2000) -> None:
    """Requests sharing a long prefix, one after another, until ``stop`` (the dashboard needs moving counters)."""
    for i in range(limit):
        if stop.is_set():
            return
        body = json.dumps({"model": "llama-8b-shape", "prompt": "shared system prompt " * 40 + f"q{i % 5}",
                           "max_tokens": 4}).encode()
        req = urllib.request.Request(f"{router}/v1/completions", data=body,
                                     headers={"Content-Type": "application/json"})
        try:
            urllib.request.urlopen(req, timeout=30).close()
        except OSError:
            time.sleep(0.1)


def test_dashboard_page_draws_live_figures(page, tmp_path: Path) -> None:
    from llmd_kserve.stack import LocalStack

    with LocalStack(engines=2, prometheus=False, time_scale=0.2, log_dir=str(tmp_path / "stack")) as stack:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        proc = subprocess.Popen([sys.executable, "-m", "llmd_kserve.cli", "dashboard", "--router", stack.router_url,
                                 "--port", str(port), "--interval", "1"], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        stop = threading.Event()
        load = threading.Thread(target=_traffic, args=(stack.router_url, stop), daemon=True)
        load.start()
        try:
            _wait_http(url + "/", proc)
            page.goto(url + "/")
            try:
                page.wait_for_function("() => Number(document.body.dataset.samples || 0) >= 3", timeout=120_000,
                                       polling=500)
                page.wait_for_function(f"() => ({PLOTS_WITH_DATA})().length >= 4", timeout=120_000, polling=500)
            finally:
                screenshot(page, "dashboard")
            plots = page.evaluate(PLOTS_WITH_DATA)
            assert len(plots) == 4 and all(p["traces"] and p["points"] for p in plots), plots
            hit = page.evaluate("() => document.getElementById('fig-hit_rate').data[0].y.filter(v => v !== null)")
            assert hit and all(0.0 <= v <= 1.0 for v in hit)
            assert page.inner_text("#error") == ""
            assert page.inner_text("#hit-engines").endswith("%")
        finally:
            stop.set()
            proc.terminate()
            proc.wait(timeout=20)
            load.join(timeout=40)
