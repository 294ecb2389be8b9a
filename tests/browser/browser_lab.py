"""Helpers of the browser tests: a private JupyterLab server, headless Chromium (system executable), screenshots."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from llmd_kserve.stack.procs import free_port

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")


def chromium_path() -> str:
    """The system Chromium (Debian ``chromium``, installed by ``tests/run.sh``), or skip with the reason."""
    for path in (os.environ.get("LLMD_CHROMIUM"), *CHROMIUM_CANDIDATES):
        if path and os.access(path, os.X_OK):
            return path
    pytest.skip("no Chromium: install the Debian package 'chromium' (tests/run.sh does) or set LLMD_CHROMIUM")


@dataclass(frozen=True)
class Lab:
    url: str
    token: str
    root: Path

    def open_url(self, path: str) -> str:
        return f"{self.url}/lab/tree/{path}?token={self.token}"


@contextlib.contextmanager
def jupyterlab(root: Path, home: Path, timeout: float = 90.0) -> Iterator[Lab]:
    """JupyterLab on 127.0.0.1 with a random token, serving ``root``; its config, data, runtime and settings dirs
    live under ``home`` (the user's own Jupyter setup is not read or written). Stopped on exit."""
    token = secrets.token_hex(16)
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(home / "config"), "JUPYTER_DATA_DIR": str(home / "data"),
           "JUPYTER_RUNTIME_DIR": str(home / "runtime"), "IPYTHONDIR": str(home / "ipython"),
           "JUPYTERLAB_SETTINGS_DIR": str(home / "lab-settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(home / "lab-workspaces"), "JUPYTER_PLATFORM_DIRS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "LLMD_NOTEBOOK_ENGINE": "sim"}  # the quickstart would start real vLLM where its environment is found
    for d in ("config", "data", "runtime", "ipython", "lab-settings", "lab-workspaces"):
        (home / d).mkdir(parents=True, exist_ok=True)
    news = home / "lab-settings" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    news.parent.mkdir(parents=True, exist_ok=True)
    news.write_text('{"fetchNews": "false", "checkForUpdates": false}')  # no news toast over the page
    port = free_port()
    log = open(home / "jupyterlab.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
         "--ServerApp.port_retries=50", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
         "--ServerApp.open_browser=False", "--LabApp.news_url=", "--LabApp.check_for_updates_class="
         "jupyterlab.NeverCheckForUpdate", "--ServerApp.terminals_enabled=False",
         *(["--allow-root"] if os.geteuid() == 0 else [])],
        cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = None
    try:
        url = _wait_for_server(proc, home / "runtime", timeout, home / "jupyterlab.log")
        yield Lab(url, token, root)
    finally:
        _shutdown(proc, url, token)
        log.close()
        if ARTIFACTS.is_dir():
            shutil.copy(home / "jupyterlab.log", ARTIFACTS / "jupyterlab.log")


def _shutdown(proc: subprocess.Popen, url: str | None, token: str) -> None:
    """``POST /api/shutdown`` (kernels shut down cleanly: a notebook's local stack stops at kernel exit), then
    SIGTERM, then SIGKILL to the server's process group, each after a bounded wait."""
    if proc.poll() is None and url is not None:
        req = urllib.request.Request(f"{url}/api/shutdown", method="POST",
                                     headers={"Authorization": f"token {token}"})
        with contextlib.suppress(OSError):
            urllib.request.urlopen(req, timeout=10).close()
    for sig, wait in ((0, 30), (signal.SIGTERM, 15), (signal.SIGKILL, 10)):
        if sig:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _wait_for_server(proc: subprocess.Popen, runtime: Path, timeout: float, log: Path) -> str:
    """The server's URL from its runtime file (``jpserver-<pid>.json``: the port it really bound)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"JupyterLab exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        for f in runtime.glob(f"jpserver-{proc.pid}.json"):
            try:
                info = json.loads(f.read_text())
            except ValueError:
                continue
            return f"http://127.0.0.1:{info['port']}"
        time.sleep(0.2)
    raise RuntimeError(f"JupyterLab did not start within {timeout} s:\n{log.read_text()[-3000:]}")


def screenshot(page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def open_notebook(page, lab: Lab, path: str, timeout_s: float = 120.0) -> None:
    """Open ``path`` in JupyterLab and wait until its kernel is idle (accepting a kernel-selection dialog)."""
    page.goto(lab.open_url(path))
    page.wait_for_selector(".jp-NotebookPanel", timeout=timeout_s * 1000)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        accept = page.query_selector(".jp-Dialog .jp-mod-accept")
        if accept is not None and accept.is_visible():
            accept.click()
        ready = page.evaluate("""() => {
            const name = document.querySelector('.jp-NotebookPanel-toolbar .jp-KernelName');
            const idle = document.querySelector(".jp-Notebook-ExecutionIndicator[data-status='idle']");
            return !!(name && idle && !/No Kernel/.test(name.textContent) && name.textContent.trim());
        }""")
        if ready:
            return
        page.wait_for_timeout(250)
    raise AssertionError(f"the kernel of {path} never became idle")


def run_all_cells(page, timeout_s: float = 300.0) -> list[str]:
    """Run > Run All Cells, then wait until every code cell has an execution count and the kernel is idle;
    returns the error outputs' text (empty when no cell raised)."""
    page.click(".lm-MenuBar-itemLabel:text-is('Run')")
    page.click(".lm-Menu-itemLabel:text-is('Run All Cells')")
    page.wait_for_function(
        """() => {
          const prompts = Array.from(document.querySelectorAll('.jp-CodeCell .jp-InputPrompt'))
            .map(e => e.textContent.trim());
          const idle = document.querySelector(".jp-Notebook-ExecutionIndicator[data-status='idle']");
          return prompts.length > 0 && prompts.every(t => /^\\[\\d+\\]:$/.test(t)) && idle !== null;
        }""", timeout=timeout_s * 1000, polling=500)
    return [e.inner_text()[:2000] for e in page.query_selector_all("[data-mime-type='application/vnd.jupyter.stderr'].jp-OutputArea-output, .jp-RenderedText[data-mime-type='application/vnd.jupyter.error']")]


PLOTS_WITH_DATA = """() => Array.from(document.querySelectorAll('.js-plotly-plot')).map(el => ({
    widget: el.closest('.jp-RenderedPlotly') === null,  // not the static figure renderer: a FigureWidget's view
    traces: (el.data || []).length,
    points: (el.data || []).reduce((n, t) => n + ((t.y || t.z || t.x || []).length || 0), 0)}))"""
"""JS: per plotly plot in the page, whether a widget (FigureWidget) drew it, its number of traces and data points."""
