"""The image the manifests reference, and the vendored CRD schemas the validation tests use."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from llmd_kserve import __version__
from llmd_kserve.kube.spec import DeploymentSpec

ROOT = Path(__file__).resolve().parents[2]


def test_dockerfile_entrypoint_and_inputs():
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r'^ENTRYPOINT \["llmd-kserve"\]$', text, re.M)
    for src in re.findall(r"^COPY (?!--)(.+) \S+$", text, re.M):
        for path in src.split():
            assert (ROOT / path).exists(), path
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert "kube" in extras and "kubernetes" in " ".join(extras["kube"])  # discovery runs in the router image
    assert DeploymentSpec().images.llmd.endswith(f":{__version__}")
    assert DeploymentSpec().images.llmd.split(":")[0] in text
